"""``benchmarks/gpu.sh`` as far as a machine without a GPU allows (issue 13, item 5).

Without a GPU it must stop at once with one clear line and a non-zero exit, whichever check fails
(nvidia-smi missing, nvidia-smi listing no GPU, torch without CUDA). The parts that need no GPU run here:
the rows of an ``eval`` and a ``finetune`` run folder collected as the section shows them, the section
written into RESULTS.md, and ``run_all.py`` keeping it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def _one_line(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gpu.sh: ") and fragment in lines[0], lines[0]


def _fake_nvidia_smi(folder: Path, output: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\n")
    fake.chmod(0o755)
    return str(folder)


def test_no_nvidia_smi_is_one_line() -> None:
    path = "/usr/bin:/bin"
    if shutil.which("nvidia-smi", path=path):
        pytest.skip("this machine has nvidia-smi")
    _one_line(_run({"PATH": path, "HOME": os.environ.get("HOME", "/tmp")}), "nvidia-smi not found")


@pytest.mark.parametrize("args", [("nonsense",), ("tables", "scale")])
def test_bad_job_is_one_line_before_any_check(args: tuple[str, ...]) -> None:
    fragment = "unknown job 'nonsense'" if args == ("nonsense",) else "one job at a time"
    _one_line(_run({"PATH": "/usr/bin:/bin"}, *args), fragment)


def test_tables_job_without_a_gpu_is_one_line(tmp_path: Path) -> None:
    bin_dir = _fake_nvidia_smi(tmp_path / "bin", "")
    _one_line(_run({"PATH": f"{bin_dir}:/usr/bin:/bin"}, "tables"), "lists no GPU")


def test_nvidia_smi_without_a_gpu_is_one_line(tmp_path: Path) -> None:
    bin_dir = _fake_nvidia_smi(tmp_path / "bin", "")
    _one_line(_run({"PATH": f"{bin_dir}:/usr/bin:/bin"}), "lists no GPU")


def test_torch_without_cuda_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    bin_dir = _fake_nvidia_smi(tmp_path / "bin", "NVIDIA H200, 143771 MiB, 580.159.03\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHON": sys.executable,
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    _one_line(_run(env), "torch.cuda.is_available() is False")


def test_collect_and_report_write_the_gpu_section(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from ropelab.cli import main

    gpu = _module("gpu_bench")
    run_all = _module("run_all")
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_model_dir), "--lengths", "32,64", "--docs", "1", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    capsys.readouterr()
    rows = tmp_path / "rows"
    rows.mkdir()
    eval_rows = gpu.collect("eval", out, real=True)
    assert [(r["length"], r["device"], r["dtype"]) for r in eval_rows] == [
        (32, "cpu", "float32"),
        (64, "cpu", "float32"),
    ]
    assert gpu.collect("eval", out, real=False)[0]["loss (nats/token)"].startswith("- (random")
    (rows / "3-eval.json").write_text(json.dumps(eval_rows))
    (rows / "1-rotary.json").write_text(
        json.dumps(
            [
                {
                    "config": "bfloat16",
                    "ratio": 1.1,
                    "target": "<= 1.5",
                    "pass": True,
                    "shapes": "q",
                    "detail": "d",
                }
            ]
        )
    )
    (rows / "steps.tsv").write_text("prepare\t3\tok\nrotary\t20\tok\nattention\t150\ttimed out after 150s\n")
    results = tmp_path / "RESULTS.md"
    shutil.copy(ROOT / "benchmarks" / "RESULTS.md", results)
    before = run_all.sections(results.read_text())[1]
    gpu.write_section(rows, results, "note line")
    _, parts = run_all.sections(results.read_text())
    section = parts[gpu.SECTION]
    assert "note line" in section and "| attention | 150 | timed out after 150s |" in section
    assert "| bfloat16 | 1.10x | ≤ 1.5 | pass | q |" in section and "### 3-eval" in section
    assert set(parts) == set(before) | {gpu.SECTION} and list(parts)[-1] == run_all.OTHERS
    gpu.write_section(rows, results, "second note")  # replaced, not added twice
    assert results.read_text().count(f"## {gpu.SECTION}") == 1 and "second note" in results.read_text()
    # make bench (a full run) and run_all --only keep the section
    text = results.read_text()
    assert gpu.SECTION in run_all.sections(run_all.merge(text, text, {"rotary_speed.py"}))[1]
    fresh = "# Benchmark results\n\nnew head\n\n## rotary_speed.py\n\nnew\n"
    kept = run_all.keep_sections(fresh, text)
    assert "new head" in kept and f"## {gpu.SECTION}" in kept and "second note" in kept


def test_attention_step_runs_on_the_tiny_model(tiny_model_dir: Path) -> None:
    """The ``attention`` step's code (load, extend, interleaved forwards, rows) on the CPU, 64 tokens."""
    gpu = _module("gpu_bench")
    rows = gpu.model_rows(str(tiny_model_dir), True, 64, 1, device="cpu")
    assert [r["config"].split(" /")[0] for r in rows] == ["self-extend", "rerope+log-n"]
    assert all(r["ratio"] > 0 and "loss" in r["detail"] and r["pass"] in (True, False) for r in rows)
    # a budget that leaves no time for a timed round reports the warm-up forwards, saved as soon as run
    saved = []
    rows = gpu.model_rows(str(tiny_model_dir), False, 64, 3, device="cpu", budget=0.0, save=saved.append)
    assert len(saved) == 1 and all("warm-up forward only" in r["detail"] for r in rows + saved[0])
    assert all("random weights" in r["shapes"] and "loss" not in r["detail"] for r in rows)
