"""`torchrun --nproc_per_node=2 -m ropelab eval|passkey`: the units split over 2 gloo processes give the rows
of one process; one rank killed (SIGKILL) mid-sweep, the same command resumes: no unit twice, same rows.
(Two torchrun launches, ~20 s each on 2 idle cores: most of it is importing torch and transformers.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ropelab.cli import main
from ropelab.report import read_jsonl

pytest.importorskip("transformers")

_SRC = str(Path(__file__).resolve().parents[1] / "src")

#: run by torchrun as a script: passkey on 2 ranks, then eval where rank 1 kills itself (SIGKILL, as a crash
#: or an OOM kill would) at the start of its second document; torchrun then stops rank 0
_PASSKEY_THEN_KILLED_EVAL = textwrap.dedent(
    """
    import importlib, os, signal, sys
    from ropelab.cli import main

    sweep = importlib.import_module("ropelab.evaluate.sweep")
    args = sys.argv[1:]
    passkey, evaluate = args[: args.index("eval")], args[args.index("eval") :]
    assert main(passkey) == 0
    real, calls = sweep._batch_cells, []  # batch size 1: one call per document

    def doc_cells(*args, **kwargs):
        calls.append(1)
        if os.environ["RANK"] == "1" and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    sweep._batch_cells = doc_cells
    sys.exit(main(evaluate))
    """
)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=0",  # a killed rank ends the launch; a restart would redo (or hang on) the sweep
        "--monitor-interval=0.1",
    ]
    cmd += args
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _by_key(rows: list[dict], *also: str) -> dict[tuple, dict]:
    """Rows keyed by their resume key (and ``also``), without the wall-clock fields."""
    drop = {"time", "seconds"}
    return {(r["key"], *(r[a] for a in also)): {k: v for k, v in r.items() if k not in drop} for r in rows}


def test_two_ranks_give_one_process_rows_and_resume_after_a_kill(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = ["--model", str(tiny_model_dir), "--threads", "1", "--quiet"]
    evaluate = [
        "eval",
        *model,
        "--method",
        "none,linear,ntk",
        "--factor",
        "2",
        "--lengths",
        "32,64",
        "--docs",
        "3",
    ]
    passkey = ["passkey", *model, "--method", "none,linear", "--factor", "2", "--lengths", "224",
               "--depths", "0,1", "--trials", "1"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*evaluate, "--out", str(one / "eval")]) == 0
    assert main([*passkey, "--out", str(one / "passkey")]) == 0

    # 2 ranks: passkey to the end, then eval with rank 1 killed at its second document
    script = tmp_path / "killed.py"
    script.write_text(_PASSKEY_THEN_KILLED_EVAL)
    killed = _torchrun(
        [str(script), *passkey, "--out", str(two / "passkey"), *evaluate, "--out", str(two / "eval")]
    )
    assert "Traceback" in killed.stderr  # rank 0 stopped too (its barrier lost rank 1)
    pk1, pk2 = (list(read_jsonl(o / "passkey" / "results.jsonl")) for o in (one, two))
    assert len(pk2) == len({r["key"] for r in pk2}) == 2 * 2  # every cell once, whichever rank ran it
    assert _by_key(pk2) == _by_key(pk1)  # the keys and numbers (keys, answers) of one process
    assert (two / "passkey" / "passkey_none.png").exists()  # rank 0 drew the heatmaps
    before = list(read_jsonl(two / "eval" / "doc_results.jsonl"))
    assert 1 <= len(before) < 9, len(before)  # part-way: rank 1's first document is in, not all

    # the same command, 2 ranks: only the missing documents are computed
    resumed = _torchrun(["-m", "ropelab", *evaluate, "--out", str(two / "eval")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rank 1 of 2: done" in resumed.stdout and resumed.stdout.count("wall time") == 1  # rank 0's tables
    units2 = list(read_jsonl(two / "eval" / "doc_results.jsonl"))
    assert len(units2) == len({r["key"] for r in units2}) == 3 * 3  # no unit computed twice
    assert units2[: len(before)] == before  # the killed run's rows kept as written (their times too)
    units1 = list(read_jsonl(one / "eval" / "doc_results.jsonl"))
    assert _by_key(units2) == _by_key(units1)
    agg1, agg2 = (list(read_jsonl(o / "eval" / "results.jsonl")) for o in (one, two))
    cell = ("key", "metric", "length")
    assert [tuple(r[c] for c in cell) for r in agg2] == [tuple(r[c] for c in cell) for r in agg1]  # one order
    assert _by_key(agg2, "metric", "length") == _by_key(agg1, "metric", "length")
    assert {r["device"] for r in agg2} == {"cpu"} and (two / "eval" / "report.md").exists()
