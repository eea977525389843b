"""`check_config` verdicts, the capability table in docs/check.md, and the `ropelab check` command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from ropelab.cli import main
from ropelab.errors import RopeConfigError
from ropelab.stacks import check_config
from ropelab.stacks.capabilities import capability_markdown
from stack_configs import deepseek_v3, llama, llama31_8b, phi3_128k_style

DOCS = Path(__file__).resolve().parents[1] / "docs" / "check.md"


def test_llama31_is_the_same_in_every_stack() -> None:
    report = check_config(llama31_8b(), name="llama-3.1-8b")
    assert report.method == "llama3" and report.lengths == (131072,)
    assert [r.status for r in report.rows] == ["same", "same", "same"]
    hf = report.row("transformers")
    assert hf.freq_rel_diff == 0.0 and hf.attention_rel_diff == 0.0  # bit-identical
    assert report.row("vLLM").freq_rel_diff < 1e-6
    assert report.row("llama.cpp").freq_rel_diff < 1e-5  # ggml's float32 iterated powers
    assert all(r.max_length == 131072 for r in report.rows)


def test_phi3_longrope_switching_differs_in_vllm_and_llamacpp() -> None:
    report = check_config(phi3_128k_style(), name="phi-3-mini-128k")
    assert report.lengths == (4096, 131072)  # short table at L0, long beyond
    assert report.row("transformers").verdict == "same"
    for stack in ("vLLM", "llama.cpp"):
        row = report.row(stack)
        assert row.status == "differs" and "long factors" in row.verdict and row.worst_length == 4096


def test_dynamic_is_evaluated_at_l0_and_at_the_extended_length() -> None:
    report = check_config(llama({"rope_type": "dynamic", "factor": 4.0}, max_pos=4096))
    assert report.lengths == (4096, 16384)
    assert report.row("transformers").verdict == "same"
    vllm = report.row("vLLM")
    assert vllm.status == "differs" and vllm.worst_length == 16384 and "static table" in vllm.verdict
    assert "serves up to 16384" in vllm.verdict
    assert report.row("llama.cpp").status == "differs"


def test_deepseek_mscale_alone_differs_only_in_vllm() -> None:
    report = check_config(deepseek_v3(mscale=0.707))
    assert report.row("transformers").verdict == "same"
    assert report.row("vLLM").status == "differs" and "mscale alone" in report.row("vLLM").verdict
    assert report.row("llama.cpp").status == "same"


def test_explicit_yarn_attention_factor_is_lost_in_vllm_and_llamacpp() -> None:
    scaling = {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 4096,
        "attention_factor": 1.0,
    }
    report = check_config(llama(scaling))
    assert report.row("transformers").verdict == "same"
    assert "attention factor 1.13863 vs 1" in report.row("vLLM").verdict
    assert "PR #17945" in report.row("llama.cpp").verdict


def test_a_method_transformers_lacks_is_cannot_express() -> None:
    report = check_config(llama({"rope_type": "ntk", "factor": 4.0}))
    assert report.row("transformers").status == "cannot express"
    assert report.row("vLLM").status == "differs"  # vLLM's ntk is another formula


def test_bad_config_raises_one_line() -> None:
    with pytest.raises(RopeConfigError, match="unknown rope_parameters key 'factr'"):
        check_config(llama({"rope_type": "linear", "factr": 2.0}), name="x")


def test_check_itself_is_fast_once_imported() -> None:
    check_config(llama31_8b())  # imports
    start = time.perf_counter()
    check_config(phi3_128k_style())
    assert time.perf_counter() - start < 2.0


def test_docs_capability_table_is_generated_from_the_modules() -> None:
    table = capability_markdown()
    assert table in DOCS.read_text(), "docs/check.md is stale: paste capability_markdown()'s output"
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "exact" in rows["llama3"] and "no: attention-level" in rows["self-extend"]


# --------------------------------------------------------------------------- the command
def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_cli_prints_a_table_per_config_and_writes_results(tmp_path: Path, capsys) -> None:
    a = write(tmp_path, "llama31.json", llama31_8b())
    b = write(tmp_path, "phi3.json", phi3_128k_style())
    out = tmp_path / "out"
    assert main(["check", str(a), str(b), "--out", str(out)]) == 0  # a difference is a finding
    text = capsys.readouterr().out
    assert "== llama31.json" in text and "== phi3.json" in text
    assert "transformers: same" in text and "vLLM: differs" in text
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in records] == ["llama31.json", "phi3.json"]
    assert {s["stack"] for s in records[0]["stacks"]} == {"transformers", "vLLM", "llama.cpp"}
    assert records[1]["lengths"] == [4096, 131072]
    hf = next(s for s in records[0]["stacks"] if s["stack"] == "transformers")
    assert hf["inv_freq"] == records[0]["reference_inv_freq"] and len(hf["inv_freq"][0]) == 64


def test_cli_strict_exits_1_when_a_stack_differs(tmp_path: Path, capsys) -> None:
    same = write(tmp_path, "l.json", llama31_8b())
    differs = write(tmp_path, "p.json", phi3_128k_style())
    assert main(["check", str(same), "--strict", "--out", str(tmp_path)]) == 0
    assert main(["check", str(differs), "--strict", "--out", str(tmp_path)]) == 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ([1, 2], "must hold a JSON object"),
        ({"rope_theta": 10000.0}, "neither head_dim"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, content, message) -> None:
    path = write(tmp_path, "bad.json", content)
    assert main(["check", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_missing_file_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.json" in err and err.count("\n") == 1
