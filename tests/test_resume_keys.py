"""Resume keys cover every input that changes a number (issue 11, item 3).

A run into a folder that already holds results recomputes whatever another dtype, other model
files or other corpus text would change, and reuses exactly the rest. Through the CLI, on the tiny
saved transformers model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file

from ropelab.cli import main
from ropelab.hf.load import FULL_HASH_BYTES, file_fingerprint, model_fingerprint
from ropelab.report import read_jsonl


def _eval(model: Path, corpus: Path, out: Path, *extra: str) -> None:
    argv = ["eval", "--model", str(model), "--corpus", str(corpus), "--method", "none"]
    argv += ["--lengths", "32,64", "--docs", "2", "--quiet", "--out", str(out), *extra]
    assert main(argv) == 0


def _units(out: Path) -> list[dict]:
    return list(read_jsonl(out / "doc_results.jsonl"))


def _rows(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "results.jsonl") if r.get("command") == "eval"]


@pytest.fixture
def setup(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, name in enumerate(("a.txt", "b.txt")):
        (corpus / name).write_text(f"document {name}: " + " ".join(f"word{j * (i + 2)}" for j in range(400)))
    return model, corpus, tmp_path / "out"


def test_dtype_is_in_the_key(setup, capsys) -> None:
    model, corpus, out = setup
    _eval(model, corpus, out)
    units, rows = len(_units(out)), len(_rows(out))
    assert units == 2
    _eval(model, corpus, out)  # the same run again: nothing recomputed
    assert len(_units(out)) == units and len(_rows(out)) == rows
    _eval(model, corpus, out, "--dtype", "bfloat16")
    assert len(_units(out)) == 2 * units and len(_rows(out)) == 2 * rows
    bf16 = [r for r in _rows(out) if r["dtype"] == "bfloat16"]
    fp32 = [r for r in _rows(out) if r["dtype"] == "float32"]
    assert len(bf16) == len(fp32) == rows
    assert [r["loss"] for r in bf16] != [r["loss"] for r in fp32]  # bf16 numbers, not fp32's
    capsys.readouterr()


def test_changed_weights_at_the_same_path_are_recomputed(setup, capsys) -> None:
    model, corpus, out = setup
    _eval(model, corpus, out)
    units = len(_units(out))
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if "embed" in k)
    tensors[name] = tensors[name] * 1.5
    save_file(tensors, weights, metadata={"format": "pt"})
    _eval(model, corpus, out)
    assert len(_units(out)) == 2 * units
    rows = _rows(out)
    assert len({r["key"] for r in rows}) == 2  # the method under a second key: new rows
    old, new = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    assert [r["loss"] for r in old] != [r["loss"] for r in new]
    capsys.readouterr()


def test_a_changed_corpus_file_recomputes_that_document(setup, capsys) -> None:
    model, corpus, out = setup
    _eval(model, corpus, out)
    units, rows = len(_units(out)), len(_rows(out))
    (corpus / "b.txt").write_text("changed text " + " ".join(f"other{j}" for j in range(400)))
    _eval(model, corpus, out)
    # only b.txt's unit is recomputed; every aggregate is new
    assert len(_units(out)) == units + 1
    assert {u["doc"] for u in _units(out)[units:]} == {"b.txt"}
    assert len(_rows(out)) == 2 * rows
    capsys.readouterr()


def test_passkey_key_has_dtype_and_model_files(setup, capsys) -> None:
    model, _, out = setup
    argv = ["passkey", "--model", str(model), "--lengths", "256", "--depths", "0.5", "--trials", "1"]
    argv += ["--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0
    assert len(list(read_jsonl(out / "results.jsonl"))) == 1
    assert main([*argv, "--dtype", "bfloat16"]) == 0
    records = list(read_jsonl(out / "results.jsonl"))
    assert [r["dtype"] for r in records] == ["float32", "bfloat16"]
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "note": "edited"}))  # other files, same path
    assert main(argv) == 0
    assert len(list(read_jsonl(out / "results.jsonl"))) == 3
    capsys.readouterr()


def test_model_fingerprint_sees_content_size_and_time(tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"a" * 1000)
    before = file_fingerprint(small)
    small.write_bytes(b"b" + b"a" * 999)  # same size, other content: a full hash sees it
    assert file_fingerprint(small) != before
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    first = model_fingerprint(str(folder))
    (folder / "tokenizer.json").write_text("{}")
    assert model_fingerprint(str(folder)) != first
    assert FULL_HASH_BYTES >= 1 << 28  # SmolLM2's 93 MB GGUF is hashed whole
