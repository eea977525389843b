"""Files and folders a run owns (issue 11): torn results, one process per --out, planted states, modes.

The kill, torn-file, concurrency and planted-file cases run real processes or the real commands on
the tiny saved transformers model (``tiny_model_dir``) and the lab models.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import ropelab
from ropelab.cli import main
from ropelab.errors import RopeConfigError
from ropelab.lab.recipe import TrainRecipe
from ropelab.report import append_jsonl, read_jsonl

_SRC = str(Path(ropelab.__file__).parents[1])


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --- a torn last line -----------------------------------------------------------------------------


def test_append_after_a_torn_tail_moves_the_fragment_aside(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2})
    with path.open("a") as fh:
        fh.write('{"a": 3, "b"')  # a process killed in the middle of a write
    assert [r["a"] for r in read_jsonl(path)] == [1, 2]
    with pytest.warns(RuntimeWarning, match="torn"):
        append_jsonl(path, {"a": 4})
    assert [r["a"] for r in read_jsonl(path)] == [1, 2, 4]
    assert path.read_text().endswith('{"a": 4}\n')
    assert path.with_name("results.jsonl.torn").read_text() == '{"a": 3, "b"\n'


def test_a_complete_record_without_its_newline_is_torn_too(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')  # the write stopped just before the newline
    assert [r["a"] for r in read_jsonl(path)] == [1]
    with pytest.warns(RuntimeWarning, match="torn"):
        append_jsonl(path, {"a": 3})
    assert [r["a"] for r in read_jsonl(path)] == [1, 3]


def _tear(path: Path) -> None:
    """Cut ``path`` in the middle of its last line, as a kill during the write leaves it."""
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last + (len(data) - last) // 2])


def test_eval_recomputes_a_torn_record(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["eval", "--model", str(tiny_model_dir), "--method", "none,linear", "--factor", "2",
            "--lengths", "32,64", "--docs", "2", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    results, units = tmp_path / "results.jsonl", tmp_path / "doc_results.jsonl"
    want = sorted((r["method"], r["metric"], r["length"], r["loss"]) for r in read_jsonl(results))
    assert len(want) == 2 * 2 * 2
    _tear(results)  # linear's last aggregated row
    _tear(units)  # linear's last document
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert main(argv) == 0
    got = sorted((r["method"], r["metric"], r["length"], r["loss"]) for r in read_jsonl(results))
    assert got == want  # every row once, the torn one recomputed
    assert len(list(read_jsonl(units))) == 2 * 2
    assert results.with_name("results.jsonl.torn").exists()


# --- one process per --out folder ----------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": "holder", "since": time.time()}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    print("held", flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def held_folder(tmp_path: Path):
    """An --out folder whose lock another live process holds; yields (folder, holder pid)."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield out, holder
    finally:
        holder.kill()
        holder.wait()


def _refused(argv: list[str], capsys, pid: int) -> None:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"pid {pid}" in err and _one_line(err), err


def test_a_busy_folder_is_refused_by_every_job(held_folder, tiny_model_dir: Path, capsys) -> None:
    out, holder = held_folder
    model = ["--model", str(tiny_model_dir), "--quiet", "--out", str(out)]
    _refused(["eval", *model, "--lengths", "32", "--docs", "1"], capsys, holder.pid)
    _refused(["passkey", *model, "--lengths", "512", "--depths", "0.5", "--trials", "1"], capsys, holder.pid)
    _refused(["finetune", "--model", "lab", "--length", "256", "--steps", "1", "--quiet", "--out", str(out)],
             capsys, holder.pid)  # fmt: skip
    _refused(["lab", "--encodings", "nope", "--multiples", "1,4", "--eval-windows", "1", "--quiet", "--out",
              str(out)], capsys, holder.pid)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    # the lock dies with its owner: kill -9 the holder and the folder is free at once
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main(["eval", *model, "--lengths", "32", "--docs", "1"]) == 0
    assert len(list(read_jsonl(out / "results.jsonl"))) == 2


def test_two_concurrent_evals_do_not_duplicate_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two real processes on one folder: the second is refused in one line naming the first (held
    mid-run with SIGSTOP, so that the two surely overlap), and the first's rows are all there once."""
    argv = [sys.executable, "-m", "ropelab", "eval", "--model", str(tiny_model_dir), "--method",
            "none,linear,ntk", "--factor", "2,4", "--lengths", "32,64,128", "--docs", "2", "--quiet",
            "--threads", "1", "--out", str(tmp_path)]  # fmt: skip
    first = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "doc_results.jsonl").exists():  # written under the lock
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"pid {first.pid}" in second.stderr and _one_line(second.stderr), second.stderr
    rows = [(r["label"], r["metric"], r["length"]) for r in read_jsonl(tmp_path / "results.jsonl")]
    assert len(rows) == len(set(rows)) == 5 * 2 * 3


# --- a planted resume state ----------------------------------------------------------------------


_PLANT = textwrap.dedent(
    """
    import sys, torch

    class Planted:
        def __reduce__(self):
            return (open, (sys.argv[2], "w"))

    torch.save({"version": 1, "step": 1, "meta": None, "model": Planted()}, sys.argv[1])
    """
)


def test_planted_state_in_out_does_not_run(tmp_path: Path) -> None:
    out, marker = tmp_path / "out", tmp_path / "code-ran"
    out.mkdir()
    subprocess.run([sys.executable, "-c", _PLANT, str(out / "rope.state.pt"), str(marker)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "ropelab", "train", "--encoding", "rope", "--length", "16", "--steps", "2",
         "--batch-size", "2", "--d-model", "32", "--layers", "1", "--heads", "2", "--warmup", "1",
         "--threads", "1", "--quiet", "--out", str(out)],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "not a ropelab resume state" in done.stderr and _one_line(done.stderr), done.stderr
    assert not marker.exists()


# --- the lab's training recipe refuses what poisons training ------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("weight_decay", float("nan")), ("weight_decay", -0.1), ("grad_clip", -1.0), ("grad_clip", float("nan")),
     ("lr", float("nan")), ("rope_base", float("nan"))],
)  # fmt: skip
def test_train_recipe_refuses_poison(field: str, value: float) -> None:
    with pytest.raises(RopeConfigError, match=field):
        TrainRecipe(**{field: value})


@pytest.mark.parametrize(("flag", "value"), [("--weight-decay", "nan"), ("--grad-clip", "-1")])
def test_train_command_refuses_poison(tmp_path: Path, capsys, flag: str, value: str) -> None:
    status = main(["train", "--encoding", "rope", flag, value, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and flag.lstrip("-").replace("-", "_") in err and _one_line(err), err
    assert not (tmp_path / "o").exists()


# --- modes follow the umask -----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002])
def test_lab_checkpoint_mode_follows_the_umask(tmp_path: Path, umask: int) -> None:
    from ropelab.encodings import make_encoding
    from ropelab.lab.checkpoints import save_checkpoint
    from ropelab.lab.model import ModelConfig, TinyDecoder

    model = TinyDecoder(
        ModelConfig(d_model=16, n_layers=1, n_heads=2, mlp_ratio=2), make_encoding("alibi", n_heads=2)
    )
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", model, {"train": {}})
        append_jsonl(tmp_path / "results.jsonl", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "results.jsonl").stat().st_mode) == 0o666 & ~umask
    from ropelab.lab.checkpoints import read_meta

    assert read_meta(path)["model"]["d_model"] == 16
    assert read_meta(path)["train"] == {}
