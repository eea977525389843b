"""`--preset NAME`: a known model's config in place of --hf-config (inspect, export) and in `check`."""

from __future__ import annotations

import json

import pytest

from ropelab.cli import main
from ropelab.cli.common import preset_config
from ropelab.presets import PRESETS
from ropelab.stacks import check_config
from ropelab.stacks.check import STACKS


def test_every_preset_gets_a_verdict_from_every_stack() -> None:
    for name in PRESETS:
        report = check_config(preset_config(name), name=name)
        assert [row.stack for row in report.rows] == list(STACKS), name
        assert all(row.status in ("same", "differs", "cannot express") for row in report.rows), name


def test_check_preset_llama31_is_same_everywhere(capsys, tmp_path) -> None:
    assert main(["check", "--preset", "llama-3.1-8b", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for stack in ("transformers: same", "vLLM: same", "llama.cpp: same"):
        assert stack in out
    record = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert record["name"] == "llama-3.1-8b"


def test_check_preset_all_covers_every_preset(capsys, tmp_path) -> None:
    assert main(["check", "--preset", "all", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n== ") + out.startswith("== ") == len(PRESETS)


def test_export_preset_keeps_the_advertised_length(capsys, tmp_path) -> None:
    argv = ["export", "--preset", "llama-3.1-8b", "--format", "hf,vllm", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--max-model-len 131072" in out
    assert '"max_position_embeddings": 131072' in out


def test_inspect_preset_per_layer(capsys, tmp_path) -> None:
    assert main(["inspect", "--preset", "gemma-3-12b", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "full_attention" in out and "sliding_attention" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["check", "--preset", "lama-3.1-8b"], "did you mean 'llama-3.1-8b'"),
        (["check"], "give a CONFIG.json or --preset"),
        (["export", "--preset", "llama-3.1-8b", "--hf-config", "x.json"], "not both"),
    ],
)
def test_bad_preset_input_is_one_line(argv, expected, capsys, tmp_path) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
