"""`torchrun --nproc_per_node=2 -m ropelab tasks`: the cells (method x task x length x depth) split over 2
gloo processes give the rows and records of one process; a folder a one-process run left part-way is
finished by 2 ranks, and one left by 2 ranks (one killed with SIGKILL mid-grid) by one process, neither
recomputing a cell. (One torchrun launch, ~20 s on 2 idle cores: most of it is importing torch and
transformers in each rank; the cells themselves take well under a second.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ropelab.cli import main
from ropelab.report import read_jsonl
from ropelab.tasks.grid import run_cell

pytest.importorskip("transformers")

_SRC = str(Path(__file__).resolve().parents[1] / "src")

#: run by torchrun as a script, ``script.py FINISHED KILLED tasks ARGS``: ``ropelab tasks ARGS --out
#: FINISHED``, every rank counting the cells it computes and writing what task_grid returned to it
#: (FINISHED/records.RANK.json); then ``--out KILLED``, where rank 1 kills itself (SIGKILL, as a crash or
#: an OOM kill would) at the start of its second cell; torchrun then stops rank 0
_COUNTED_THEN_KILLED = textwrap.dedent(
    """
    import importlib, json, os, signal, sys
    from pathlib import Path

    import ropelab.tasks
    from ropelab.cli import main

    grid = importlib.import_module("ropelab.tasks.grid")
    real_cell, real_grid, computed = grid.run_cell, ropelab.tasks.task_grid, []

    def counted_cell(*args, **kwargs):
        computed.append(1)
        return real_cell(*args, **kwargs)

    def kept_grid(*args, **kwargs):
        run = real_grid(*args, **kwargs)
        mine = {"rank": run.rank, "world": run.world, "computed": len(computed), "records": run.records}
        Path(kwargs["out"], f"records.{os.environ['RANK']}.json").write_text(json.dumps(mine))
        return run

    def killed_cell(*args, **kwargs):
        computed.append(1)
        if os.environ["RANK"] == "1" and len(computed) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_cell(*args, **kwargs)

    finished, killed, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    grid.run_cell, ropelab.tasks.task_grid = counted_cell, kept_grid
    assert main([*args, "--out", finished]) == 0
    computed.clear()
    grid.run_cell, ropelab.tasks.task_grid = killed_cell, real_grid
    sys.exit(main([*args, "--out", killed]))
    """
)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["--max-restarts=0", "--monitor-interval=0.1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _timeless(rows: list[dict]) -> list[dict]:
    """Rows without the wall-clock fields (``time``, ``seconds``), in their order."""
    return [{k: v for k, v in r.items() if k not in {"time", "seconds"}} for r in rows]


def test_two_ranks_give_one_process_rows_and_resume_across_process_counts(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    tasks = ["tasks", "--model", str(tiny_model_dir), "--threads", "1", "--quiet", "--method", "none,linear",
             "--factor", "2", "--tasks", "lab-niah,lab-vt", "--lengths", "150", "--depths", "0,1",
             "--trials", "1", "--threshold", "0"]  # fmt: skip
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    assert main([*tasks, "--out", str(one)]) == 0
    rows1 = list(read_jsonl(one / "results.jsonl"))
    assert len(rows1) == len({r["key"] for r in rows1}) == 2 * 2 * 2  # methods x tasks x depths
    by_key = {r["key"]: r for r in _timeless(rows1)}

    # a one-process run stopped after 3 cells (its rows as it wrote them): 2 ranks finish it; then 2 ranks
    # on a fresh folder, rank 1 killed at its second cell
    two.mkdir()
    (two / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows1[:3]))
    script = tmp_path / "counted_then_killed.py"
    script.write_text(_COUNTED_THEN_KILLED)
    launch = _torchrun([str(script), str(two), str(killed), *tasks])
    assert "Traceback" in launch.stderr  # the killed run: rank 0 stopped too (its barrier lost rank 1)
    assert "rank 1 of 2: done" in launch.stdout and launch.stdout.count("results: ") == 1  # rank 0's table

    rows2 = list(read_jsonl(two / "results.jsonl"))
    assert rows2[:3] == rows1[:3]  # the part-done run's rows kept as written (their times too)
    assert len(rows2) == len({r["key"] for r in rows2}) == len(rows1)  # every cell once
    assert {r["key"]: r for r in _timeless(rows2)} == by_key  # the keys and numbers of one process
    ranks = [json.loads((two / f"records.{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["computed"] for r in ranks] == [3, 2]  # the 5 missing cells, split, none twice
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    for r in ranks:  # every rank returns one process's records, in the grid's order
        assert _timeless(r["records"]) == _timeless(rows1)
    assert {r["device"] for r in rows2} == {"cpu"}

    # the killed folder, resumed by one process: only the cells not there are computed
    before = list(read_jsonl(killed / "results.jsonl"))
    assert 1 <= len(before) < len(rows1), len(before)  # part-way: rank 1's first cell is in, not all
    real, computed = run_cell, []

    def counted(*args, **kwargs):
        computed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("ropelab.tasks.grid.run_cell", counted)
    assert main([*tasks, "--out", str(killed)]) == 0
    after = list(read_jsonl(killed / "results.jsonl"))
    assert after[: len(before)] == before and len(computed) == len(rows1) - len(before)
    assert {r["key"]: r for r in _timeless(after)} == by_key
