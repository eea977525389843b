"""ropelab.evaluate as a library (issue 12): one call per command, methods through the registry, every row
stamped with its provenance, resume only from rows of this layout with the same key.

On the tiny saved transformers model of tests/hf_fixtures.py (no download).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from ropelab import MethodSpec, RopeConfigError, parse_method
from ropelab.evaluate import evaluate_methods, expand_methods, passkey_grid, resolve_dtype
from ropelab.hf import make_extension
from ropelab.hf.load import model_fingerprint
from ropelab.registry import REGISTRY
from ropelab.report import read_jsonl
from ropelab.report.provenance import ROW_FIELDS, SCHEMA

TRAINED = 64  # tests/hf_fixtures.py


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, name in enumerate(("a.txt", "b.txt")):
        (folder / name).write_text(f"document {name}: " + " ".join(f"word{j * (i + 2)}" for j in range(300)))
    return folder


def _eval(model: str, corpus: Path, out: Path, **kwargs):
    options = {"methods": "none", "lengths": [32, 64], "docs": 2, "progress": False, "plots": False}
    return evaluate_methods(model, corpus=str(corpus), out=out, **{**options, **kwargs})


def _all_rows(out: Path) -> list[dict]:
    return [*read_jsonl(out / "results.jsonl"), *read_jsonl(out / "doc_results.jsonl")]


def _assert_stamped(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        missing = [name for name in ROW_FIELDS if name not in row]
        assert not missing, f"a {row.get('command')} row lacks {missing}"
        assert row["schema"] == SCHEMA and isinstance(row["key"], str)


# ------------------------------------------------------------------------- methods
def test_expand_methods_uses_the_registry_and_crosses_factors() -> None:
    specs = expand_methods("none,pi,dynamic-ntk,self-extend,yarn(factor=8)", [2, 4], group=2, window=None)
    assert [s.label for s in specs] == [
        "none",
        "linear(factor=2)",
        "linear(factor=4)",
        "dynamic(factor=2)",
        "dynamic(factor=4)",
        "self-extend(group=2)",
        "yarn(factor=8)",  # a factor in the text is kept, not crossed
    ]
    assert [s.label for s in expand_methods("ntk,ntk+log-n", [2], log_n=True)] == ["ntk(factor=2)+log-n"]
    assert [s.label for s in expand_methods(["pi", parse_method("linear(factor=2)")], [2])] == [
        "linear(factor=2)"
    ]
    with pytest.raises(RopeConfigError, match="did you mean 'yarn'"):
        expand_methods("yarm")
    with pytest.raises(RopeConfigError, match="encoding"):
        expand_methods("alibi")


def test_make_extension_takes_specs_aliases_and_resolves_every_default(tiny_model_dir: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    for name, entry in REGISTRY.items():  # every model method, by its name and by each alias
        if entry.kind == "encoding":
            continue
        params = {"factor": 2.0} if entry.takes_factor and name not in ("longrope",) else {}
        if name == "longrope":
            continue  # needs per-pair factor lists; covered in test_hf_extend
        for text in (name, *entry.aliases):
            assert make_extension(config, text, **params).name == name
        assert make_extension(config, MethodSpec(name, params)).name == name
    se = make_extension(config, "self-extend").resolved()
    assert (se["window"], se["group"]) == (TRAINED // 4, 4)  # the defaults, written down
    assert make_extension(config, "leaky-rerope").resolved()["leak"] == 16.0
    assert make_extension(config, "rerope").resolved()["window"] == TRAINED // 4
    yarn = make_extension(config, "yarn(factor=4)+log-n").resolved()
    assert (
        yarn["factor"] == 4.0
        and yarn["log_n"] is True
        and yarn["original_max_position_embeddings"] == TRAINED
    )
    assert yarn["attention_scaling"] > 1.0  # YaRN's mscale at s=4
    assert make_extension(config, "pi", factor=2.0).resolved()["factor"] == 2.0


# --------------------------------------------------------------------------- eval
def test_evaluate_methods_stamps_every_row(tiny_model_dir: Path, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = _eval(str(tiny_model_dir), corpus, out, methods="none,pi,self-extend", factors=[2], plots=True)
    rows = _all_rows(out)
    _assert_stamped(rows)
    assert {r["method"] for r in rows} == {"none", "linear", "self-extend"}  # canonical names in results
    assert {r["label"] for r in rows} == {"none", "linear(factor=2)", "self-extend"}
    se = next(r for r in rows if r["method"] == "self-extend")
    assert se["params"] == {} and (se["resolved"]["window"], se["resolved"]["group"]) == (16, 4)
    first = rows[0]
    assert first["model"] == str(tiny_model_dir) and first["model_id"] == model_fingerprint(
        str(tiny_model_dir)
    )
    assert (first["trained_length"], first["dtype"], first["device"]) == (TRAINED, "float32", "cpu")
    assert first["corpus"]["name"] == str(corpus) and len(first["corpus"]["sha256"]) == 16
    assert set(first["versions"]) >= {"ropelab", "torch", "transformers", "python"}
    # what the run returns is what it wrote, and its report and plots
    assert len(run.records) == 3 * 2 * 2 and run.records == list(read_jsonl(out / "results.jsonl"))
    assert set(run.tables) == {"prefix", "band"} and "| linear(factor=2)" in run.tables["prefix"]
    assert run.tables["prefix"] in (out / "report.md").read_text()
    assert [p.name for p in run.plots] == ["eval_prefix.png", "eval_band.png"]
    assert run.documents == ["a.txt", "b.txt"] and run.trained_length == TRAINED


def test_a_float32_folder_rerun_in_bfloat16_recomputes(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """The issue's case: `eval --dtype bfloat16` into a folder of float32 results computes bf16 numbers."""
    out = tmp_path / "out"
    fp32 = _eval(str(tiny_model_dir), corpus, out)
    again = _eval(str(tiny_model_dir), corpus, out)  # the same run: all reused, nothing appended
    assert again.records == fp32.records and len(list(read_jsonl(out / "doc_results.jsonl"))) == 2
    bf16 = _eval(str(tiny_model_dir), corpus, out, dtype="bfloat16")
    assert {r["dtype"] for r in bf16.records} == {"bfloat16"}
    assert [r["loss"] for r in bf16.records] != [r["loss"] for r in fp32.records]
    assert {r["key"] for r in bf16.records}.isdisjoint(r["key"] for r in fp32.records)
    assert len(list(read_jsonl(out / "doc_results.jsonl"))) == 4  # both documents computed again
    report = (out / "report.md").read_text()  # both runs, side by side, told apart
    assert "| none (dtype=float32)  |" in report and "| none (dtype=bfloat16) |" in report
    assert "| none (dtype" not in bf16.tables["prefix"]  # what the run prints: its own rows
    _assert_stamped(_all_rows(out))


def test_rows_of_the_older_layout_are_recomputed(tiny_model_dir: Path, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _eval(str(tiny_model_dir), corpus, out)
    for name in ("results.jsonl", "doc_results.jsonl"):  # the same rows, without provenance
        old = [
            {k: v for k, v in r.items() if k not in ("schema", "model_id")} for r in read_jsonl(out / name)
        ]
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in old))
    units = len(list(read_jsonl(out / "doc_results.jsonl")))
    _eval(str(tiny_model_dir), corpus, out)
    assert len(list(read_jsonl(out / "doc_results.jsonl"))) == 2 * units
    current = [r for r in read_jsonl(out / "results.jsonl") if "schema" in r]
    _assert_stamped(current)


def test_a_loaded_model_is_evaluated_as_passed(tiny_model_dir: Path, corpus: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    by_name = _eval(str(tiny_model_dir), corpus, tmp_path / "a")
    passed = _eval(model, corpus, tmp_path / "b", tokenizer=tok)
    assert passed.records[0]["model"] == str(tiny_model_dir)  # config.name_or_path
    assert [r["loss"] for r in passed.records] == pytest.approx(
        [r["loss"] for r in by_name.records], abs=1e-6
    )
    with pytest.raises(RopeConfigError, match="tokenizer"):
        _eval(model, corpus, tmp_path / "c")


def test_dtype_auto_is_float32_on_cpu() -> None:
    import torch

    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16


# ------------------------------------------------------------------------ passkey
def test_passkey_grid_stamps_resumes_and_recomputes_another_dtype(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pk"
    options = {"lengths": [224], "depths": [0.0, 1.0], "trials": 1, "out": out, "progress": False}
    run = passkey_grid(str(tiny_model_dir), methods="none,pi", factors=[2], plots=True, **options)
    rows = list(read_jsonl(out / "results.jsonl"))
    _assert_stamped(rows)
    assert len(rows) == 2 * 2 and {r["method"] for r in rows} == {"none", "linear"}
    assert rows[0]["corpus"]["name"] == "passkey" and rows[0]["keys"] and "answers" in rows[0]
    assert [p.name for p in run.plots] == ["passkey_none.png", "passkey_linear(factor=2).png"]
    assert "| linear(factor=2) |" in run.table and "/2" in run.table  # 2 depths x 1 trial
    again = passkey_grid(str(tiny_model_dir), methods="none,linear(factor=2)", plots=False, **options)
    assert again.records == run.records and len(list(read_jsonl(out / "results.jsonl"))) == 4
    passkey_grid(str(tiny_model_dir), methods="none", dtype="bfloat16", plots=False, **options)
    rows = list(read_jsonl(out / "results.jsonl"))
    assert [r["dtype"] for r in rows] == ["float32"] * 4 + ["bfloat16"] * 2
    with pytest.raises(RopeConfigError, match="depths must lie in"):
        passkey_grid(str(tiny_model_dir), **{**options, "depths": [2.0]})
