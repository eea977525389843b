"""The CLI as a new user types it: tables on stdout, results.jsonl, one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ropelab.cli import main
from ropelab.report import read_jsonl


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_methods_table(capsys) -> None:
    code, out, _ = run(capsys, "methods")
    assert code == 0
    for name in (
        "none",
        "default",  # listed as the alias of none
        "pi",
        "rerope",
        "leaky-rerope",
        "self-extend",
        "alibi",
        "linear",
        "ntk",
        "ntk-mixed",
        "dynamic",
        "yarn",
        "llama3",
        "longrope",
        "2306.15595",
    ):
        assert name in out


def test_inspect_writes_table_results_and_plot(capsys, tmp_path: Path) -> None:
    code, out, err = run(
        capsys,
        "inspect",
        "--method",
        "linear,ntk,yarn,dynamic-yarn",
        "--factor",
        "4",
        "--original-max-position-embeddings",
        "2048",
        "--head-dim",
        "32",
        "--out",
        str(tmp_path),
        "--plot",
    )
    assert code == 0, err
    assert "turns@L0" in out and "interpolates" in out
    records = list(read_jsonl(tmp_path / "results.jsonl"))
    assert [r["rope"]["method"] for r in records] == ["linear", "ntk", "yarn", "dynamic-yarn"]
    assert records[0]["summary"] == {"untouched": 0, "interpolates": 16, "extrapolates": 0}
    assert records[0]["target_length"] == 8192
    png = tmp_path / "inspect.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_from_hf_config(capsys, tmp_path: Path) -> None:
    config = {
        "hidden_size": 576,
        "num_attention_heads": 9,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, out, err = run(capsys, "inspect", "--hf-config", str(path), "--out", str(tmp_path))
    assert code == 0, err
    record = next(read_jsonl(tmp_path / "results.jsonl"))
    assert record["rope"]["method"] == "yarn" and record["rope"]["head_dim"] == 64
    assert record["target_length"] == 32768
    # same geometry, another method
    code, out, err = run(
        capsys,
        "inspect",
        "--hf-config",
        str(path),
        "--method",
        "ntk",
        "--factor",
        "2",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err and "Rope('ntk', base=100000.0" in out


def test_export_all_formats(capsys, tmp_path: Path) -> None:
    code, out, err = run(
        capsys,
        "export",
        "--method",
        "yarn",
        "--factor",
        "4",
        "--original-max-position-embeddings",
        "4096",
        "--format",
        "hf,vllm,llama.cpp",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert '"rope_type": "yarn"' in out and "vllm serve" in out and "--yarn-orig-ctx 4096" in out
    assert len(list(read_jsonl(tmp_path / "results.jsonl"))) == 3


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["inspect", "--method", "yarnn", "--factor", "2"], "did you mean 'yarn'"),
        (
            ["inspect", "--method", "linear", "--factor", "0.5", "--trained-length", "8"],
            "factor must be >= 1",
        ),
        (["export", "--method", "yarn", "--factor", "2"], "needs original_max_position_embeddings"),
        (
            [
                "export",
                "--method",
                "llama3",
                "--factor",
                "8",
                "--trained-length",
                "8192",
                "--format",
                "llama.cpp",
            ],
            "llama.cpp cannot express",
        ),
        (
            [
                "inspect",
                "--method",
                "longrope",
                "--trained-length",
                "8",
                "--short-factor",
                "1,1",
                "--long-factor",
                "1,1",
            ],
            "short_factor has 2 entries",
        ),
        (["inspect", "--method", "linear", "--factor", "nan", "--trained-length", "8"], "finite"),
        (["inspect", "--method", "linear", "--factor", "abc"], "invalid float value"),
        (["inspect", "--frobnicate"], "unrecognized arguments"),
        (["inspect", "--hf-config", "/no/such/config.json"], "no such file"),
        (["inspect", "--method", "default", "--head-dim", "63", "--trained-length", "8"], "must be even"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv: list[str], fragment: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_code_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ropelab", "inspect", "--method", "yarm"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "did you mean 'yarn'" in proc.stderr and "Traceback" not in proc.stderr


def test_output_cut_short_by_a_pipe_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ropelab methods | head -1`: the reader left; exit 0 and no BrokenPipe traceback."""
    import io

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            raise io.UnsupportedOperation("no file")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["methods"]) == 0
