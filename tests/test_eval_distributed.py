"""`torchrun --nproc_per_node=2 -m ropelab eval|passkey`: the units split over 2 gloo processes give the rows
of one process; one rank killed (SIGKILL) mid-sweep, the same command resumes: no unit twice, same rows."""

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

#: run by torchrun (with one restart allowed) as a script, in each attempt: passkey, then eval. In the first
#: attempt rank 1 kills itself (SIGKILL, as a crash or an OOM kill would) at the start of its second
#: document; torchrun stops rank 0 and starts both again: the second attempt is the same command again.
#: Rank 0 keeps a copy of what the killed attempt left; each rank counts the units it computes.
_KILLED_THEN_RESTARTED = textwrap.dedent(
    """
    import importlib, os, shutil, signal, sys
    from pathlib import Path
    from ropelab.cli import main

    grid = importlib.import_module("ropelab.evaluate.passkey_grid")  # the package's name is the function
    sweep = importlib.import_module("ropelab.evaluate.sweep")

    args = sys.argv[1:]
    passkey, evaluate = args[: args.index("eval")], args[args.index("eval") :]
    out = Path(evaluate[evaluate.index("--out") + 1])
    attempt, rank = int(os.environ["TORCHELASTIC_RESTART_COUNT"]), int(os.environ["RANK"])
    if attempt == 1 and rank == 0:  # before any rank of this attempt writes (passkey ends in a barrier)
        shutil.copy(out / "doc_results.jsonl", out / "killed.jsonl")
    counted = {"cells": 0, "docs": 0}
    real_cell, real_doc = grid.run_cell, sweep._doc_cells

    def run_cell(*args, **kwargs):
        counted["cells"] += 1
        return real_cell(*args, **kwargs)

    def doc_cells(*args, **kwargs):
        counted["docs"] += 1
        if attempt == 0 and rank == 1 and counted["docs"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_doc(*args, **kwargs)

    grid.run_cell, sweep._doc_cells = run_cell, doc_cells
    assert main(passkey) == 0
    status = main(evaluate)
    (out / f"computed.{attempt}.{rank}").write_text(f"{counted['cells']} {counted['docs']}")
    sys.exit(status)
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
        "--max-restarts=1",
    ]
    cmd.append("--monitor-interval=0.1")
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

    # 2 ranks: passkey, then eval with rank 1 killed at its second document; torchrun restarts both
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_THEN_RESTARTED)
    done = _torchrun(
        [str(script), *passkey, "--out", str(two / "passkey"), *evaluate, "--out", str(two / "eval")]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 of 2: done" in done.stdout and done.stdout.count("wall time") == 1  # rank 0's tables
    pk1, pk2 = (list(read_jsonl(o / "passkey" / "results.jsonl")) for o in (one, two))
    assert len(pk2) == len({r["key"] for r in pk2}) == 2 * 2  # every cell once, whichever rank ran it
    assert _by_key(pk2) == _by_key(pk1)  # the keys and numbers (keys, answers) of one process
    assert (two / "passkey" / "passkey_none.png").exists()  # rank 0 drew the heatmaps
    computed = {p.name: [int(x) for x in p.read_text().split()] for p in (two / "eval").glob("computed.*")}
    assert set(computed) == {"computed.1.0", "computed.1.1"}, computed  # attempt 0 never finished
    killed = list(read_jsonl(two / "eval" / "killed.jsonl"))
    assert 1 <= len(killed) < 9, len(killed)  # part-way: rank 1's first document is in, not all
    assert sum(cells for cells, _ in computed.values()) == 0  # passkey again: every cell found done
    assert sum(docs for _, docs in computed.values()) == 9 - len(killed)  # only the missing documents

    units2 = list(read_jsonl(two / "eval" / "doc_results.jsonl"))
    assert len(units2) == len({r["key"] for r in units2}) == 3 * 3  # no unit computed twice
    assert units2[: len(killed)] == killed  # the killed attempt's rows kept as written
    units1 = list(read_jsonl(one / "eval" / "doc_results.jsonl"))
    assert _by_key(units2) == _by_key(units1)
    agg1, agg2 = (list(read_jsonl(o / "eval" / "results.jsonl")) for o in (one, two))
    cell = ("key", "metric", "length")
    assert [tuple(r[c] for c in cell) for r in agg2] == [tuple(r[c] for c in cell) for r in agg1]  # one order
    assert _by_key(agg2, "metric", "length") == _by_key(agg1, "metric", "length")
    assert {r["device"] for r in agg2} == {"cpu"} and (two / "eval" / "report.md").exists()
