"""`ropelab finetune`: DDP/FSDP under torchrun equal one process, resume equals uninterrupted, saving,
results.jsonl with provenance, one method vocabulary, the shared flags, and no import of the lab."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ropelab.cli import main
from ropelab.data import is_validation, split_stream
from ropelab.errors import RopeConfigError
from ropelab.finetune import FinetuneConfig, run_finetune
from ropelab.lab.finetune_target import load_lab_target
from ropelab.registry import parse_method

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few stdlib files: enough tokens for the tiny model's windows, both sides of the split."""
    from ropelab.data import stdlib_files

    folder = tmp_path_factory.mktemp("corpus")
    files = stdlib_files()
    held = [p for p in files if is_validation(p.name)][:2]
    train = [p for p in files if not is_validation(p.name)][:6]
    for p in held + train:
        shutil.copy(p, folder / p.name)
    return folder


def _curve(out: Path) -> tuple[list[tuple[int, float, float]], list[dict]]:
    rows = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    train = [(r["step"], r["loss"], r["lr"]) for r in rows if r["kind"] == "train"]
    evals = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "eval"]
    return train, evals


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _tiny_cfg(model: Path, corpus: Path, **over) -> FinetuneConfig:
    base = dict(
        length=128,
        model=str(model),
        method="yarn",
        factor=2.0,
        corpus=str(corpus),
        steps=4,
        lr=2e-3,
        batch=2,
        warmup=1,
        eval_every=2,
        eval_windows=2,
        threads=1,
    )
    return FinetuneConfig(**{**base, **over})


def _torchrun(args: list[str], tmp: Path, *, module: bool = True) -> subprocess.CompletedProcess:
    """2 processes: ``ropelab finetune ARGS``, or (``module=False``) ``ARGS`` = a script and its arguments."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*cmd, *(["-m", "ropelab", "finetune"] if module else []), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _cli_args(model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model", str(model), "--method", "yarn", "--factor", "2", "--corpus", str(corpus),
        "--length", "128", "--steps", "4", "--lr", "2e-3", "--warmup", "1", "--eval-every", "2",
        "--eval-windows", "2", "--threads", "1", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(("strategy", "pose"), [("ddp", []), ("fsdp", ["--pose", "256"])])
def test_two_processes_equal_one_with_the_same_global_batch(
    tiny_model_dir: Path, corpus_dir: Path, tmp_path: Path, strategy: str, pose: list[str]
) -> None:
    """2 gloo processes x batch 2 == 1 process x batch 2 x 2 accumulation steps (global batch 4); under FSDP
    with PoSE (each rank's rows carry their position ids)."""
    one = tmp_path / "one"
    args = _cli_args(tiny_model_dir, corpus_dir, one, "--batch", "2", "--grad-accum", "2", *pose)
    assert main(["finetune", *args]) == 0
    two = tmp_path / "two"
    _torchrun(
        _cli_args(tiny_model_dir, corpus_dir, two, "--batch", "2", "--strategy", strategy, *pose), tmp_path
    )
    (train1, evals1), (train2, evals2) = _curve(one), _curve(two)
    assert [s for s, _, _ in train1] == [1, 2, 3, 4]
    assert [s for s, _, _ in train2] == [1, 2, 3, 4]
    assert [lr for _, _, lr in train1] == [lr for _, _, lr in train2]
    assert [loss for _, loss, _ in train2] == pytest.approx([loss for _, loss, _ in train1], abs=2e-5)
    for a, b in zip(evals1, evals2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=2e-5)
    run2 = json.loads((two / "run.json").read_text())
    assert run2["world"] == 2 and run2["strategy"] == strategy and run2["finished"]
    rows = _results(two)  # written by rank 0 only: each unit once
    assert [(r["kind"], r["step"]) for r in rows] == [("eval", 0), ("eval", 2), ("eval", 4), ("final", 4)]
    assert {r["finetune"]["world"] for r in rows} == {2} and {
        r["finetune"]["global_batch"] for r in rows
    } == {4}
    assert [r["loss"] for r in rows[:3]] == pytest.approx([e["loss"] for e in evals1], abs=2e-5)
    from safetensors.torch import load_file

    w1, w2 = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4)


#: run by torchrun: an FSDP fine-tune straight through, the same stopped after 3 steps (rank 0 keeps a copy
#: of the folder as the stop left it) then resumed, and stopped before its first step then resumed: each
#: run loads the model afresh, as a new process would
_FSDP_STRAIGHT_STOPPED_RESUMED = """
import json, os, shutil, sys
from pathlib import Path
import torch.distributed as dist
from ropelab.finetune import FinetuneConfig, run_finetune

dist.init_process_group("gloo")  # one group for the five runs (each run leaves it to the script)
cfg = FinetuneConfig(**json.loads(sys.argv[1]))
straight, part = Path(sys.argv[2]), Path(sys.argv[3])
quiet = {"progress": False, "log": lambda _: None}
assert run_finetune(cfg, straight, **quiet)["finished"]
assert not run_finetune(cfg, part, stop_after=3, **quiet)["finished"]
if os.environ["RANK"] == "0":  # the next run waits for rank 0 (its first collective): nothing is written
    shutil.copytree(part, part.with_name("stopped"))
assert run_finetune(cfg, part, **quiet)["resumed_from"] == 3
zero = part.with_name("zero")  # stopped before its first step: a state whose optimiser has not stepped
assert not run_finetune(cfg, zero, stop_after=0, **quiet)["finished"]
assert run_finetune(cfg, zero, **quiet)["finished"]
dist.destroy_process_group()
"""


def test_fsdp_resume_through_sharded_checkpoints_equals_uninterrupted(
    tiny_model_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    """2 gloo ranks under FSDP: each rank saves and loads its own shards (torch.distributed.checkpoint),
    nothing whole on rank 0; stopped at step 3 and resumed, the run equals the uninterrupted one."""
    from torch.distributed.checkpoint import FileSystemReader

    from ropelab.train.loop import load_state

    cfg = _tiny_cfg(tiny_model_dir, corpus_dir, steps=4, save_every=2, eval_every=2, strategy="fsdp")
    script = tmp_path / "fsdp_resume.py"
    script.write_text(_FSDP_STRAIGHT_STOPPED_RESUMED)
    straight, part = tmp_path / "straight", tmp_path / "part"
    _torchrun([str(script), json.dumps(cfg.to_dict()), str(straight), str(part)], tmp_path, module=False)
    # the stopped run's state: a small state.pt naming step-3's shards, one file per rank, nothing whole
    stopped = tmp_path / "stopped"
    state = load_state(stopped / "state.pt")
    assert state is not None and state["step"] == 3 and state["shards"] == "step-3"
    assert "model" not in state and "optimizer" not in state
    assert [p.name for p in (stopped / "state.dcp").iterdir()] == ["step-3"]  # step 2's removed
    shards = stopped / "state.dcp" / "step-3"
    files = {p.name: p.stat().st_size for p in shards.iterdir()}
    assert set(files) == {".metadata", "__0_0.distcp", "__1_0.distcp"}, files
    meta = FileSystemReader(shards).read_metadata().state_dict_metadata
    params = sum(m.size.numel() for k, m in meta.items() if k.startswith("model."))
    moments = sum(m.size.numel() for k, m in meta.items() if k.endswith(("exp_avg", "exp_avg_sq")))
    assert params > 50_000 and moments == 2 * params  # the whole model and AdamW's two moments
    for name in ("__0_0.distcp", "__1_0.distcp"):  # each rank wrote about its half of 3 x 4 bytes x params
        assert 0.3 * 12 * params < files[name] < 0.7 * 12 * params, files
    # resumed == straight: curve, results rows, weights (bitwise); the finished run leaves no state
    assert not (part / "state.pt").exists() and not (part / "state.dcp").exists()
    assert _curve(part) == _curve(straight) == _curve(tmp_path / "zero")
    numbers = ("kind", "step", "loss", "loss_within", "loss_beyond", "train_loss", "key")
    assert [[r[k] for k in numbers] for r in _results(part)] == [
        [r[k] for k in numbers] for r in _results(straight)
    ]
    from safetensors.torch import load_file

    a, b = (
        load_file(straight / "model" / "model.safetensors"),
        load_file(part / "model" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_uninterrupted_run(tiny_model_dir: Path, corpus_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny_cfg(tiny_model_dir, corpus_dir, steps=6, save_every=2, eval_every=3)
    straight = run_finetune(cfg, tmp_path / "straight", progress=False, log=lambda _: None)
    assert straight["finished"]
    out = tmp_path / "resumed"
    part = run_finetune(cfg, out, progress=False, stop_after=3, log=lambda _: None)
    assert not part["finished"] and (out / "state.pt").exists()
    again = run_finetune(cfg, out, progress=False, log=lambda _: None)
    assert again["finished"] and again["resumed_from"] == 3
    assert not (out / "state.pt").exists()  # a finished run leaves the model, not the state
    assert _curve(out) == _curve(tmp_path / "straight")
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # results.jsonl: the rows of the resumed run are those of the straight run, each written once
    straight_rows, resumed_rows = _results(tmp_path / "straight"), _results(out)
    units = [("eval", 0), ("eval", 3), ("eval", 6), ("final", 6)]
    assert [(r["kind"], r["step"]) for r in resumed_rows] == units
    assert [r["key"] for r in resumed_rows] == [r["key"] for r in straight_rows]
    numbers = ("loss", "loss_within", "loss_beyond", "train_loss")
    assert [[r[k] for k in numbers] for r in resumed_rows] == [[r[k] for k in numbers] for r in straight_rows]
    from ropelab.hf.load import model_fingerprint
    from ropelab.report.provenance import missing_fields

    for row in resumed_rows:
        assert missing_fields(row) == [], row
        assert row["command"] == "finetune" and row["method"] == "yarn" and row["resolved"] == {"factor": 2.0}
        assert row["model_id"] == model_fingerprint(str(tiny_model_dir)) and row["trained_length"] == 64
        assert row["dtype"] == "float32" and row["device"] == "cpu" and row["threads"] == 1
        assert row["corpus"]["name"] == str(corpus_dir) and len(row["corpus"]["sha256"]) == 16
        settings = {"length": 128, "steps": 6, "lr": 2e-3, "batch_size": 2, "grad_accum": 1, "seed": 0}
        assert settings.items() <= row["finetune"].items()
    assert resumed_rows[-1]["saved"] == str(out / "model")
    # the same command once more: nothing to do, nothing written
    lines: list[str] = []
    assert run_finetune(cfg, out, progress=False, log=lines.append)["finished"]
    assert "already finished" in lines[0]
    assert _results(out) == resumed_rows
    # another configuration in the same folder is refused, not mixed in
    part2 = tmp_path / "other"
    run_finetune(cfg, part2, progress=False, stop_after=1, log=lambda _: None)
    with pytest.raises(Exception, match="another run"):
        run_finetune(_tiny_cfg(tiny_model_dir, corpus_dir, steps=6, lr=1e-3), part2, progress=False)


def test_saved_model_carries_the_method(tiny_model_dir: Path, corpus_dir: Path, tmp_path: Path) -> None:
    """transformers loads the saved folder with yarn in rope_parameters; logits equal the trained model's."""
    from transformers import AutoModelForCausalLM

    from ropelab.finetune import HFTarget
    from ropelab.hf.load import load_model

    cfg = _tiny_cfg(tiny_model_dir, corpus_dir, steps=2, eval_windows=0)
    old_umask = os.umask(0o022)
    try:
        summary = run_finetune(cfg, tmp_path, progress=False, log=lambda _: None)
    finally:
        os.umask(old_umask)
    folder = Path(summary["model"])
    # the user's umask decides the modes (safetensors alone writes 0600)
    for path in [*folder.iterdir(), tmp_path / "run.json", tmp_path / "curve.jsonl"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    config = json.loads((folder / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "yarn"
    assert config["rope_parameters"]["factor"] == 2.0
    assert config["max_position_embeddings"] == 128
    assert config["ropelab"]["finetune"]["config"]["length"] == 128
    ids = torch.randint(0, 300, (1, 100), generator=torch.Generator().manual_seed(0))
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    ours, _ = load_model(str(folder))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, plain(ids).logits, atol=1e-5, rtol=0)
    # the fine-tuned weights with the method applied by hand give the same logits
    target = HFTarget.load(str(tiny_model_dir), str(corpus_dir))
    target.model.load_state_dict(plain.state_dict())
    assert target.apply_method(parse_method("yarn", factor=2.0), 128) == {"factor": 2.0}
    with torch.no_grad():
        torch.testing.assert_close(target.model(ids).logits, plain(ids).logits, atol=1e-5, rtol=0)


def test_method_transformers_lacks_is_reapplied_on_load(
    tiny_model_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    """A dynamic-yarn fine-tune: ropelab's loader re-applies it (and "none" keeps it)."""
    from ropelab.finetune import HFTarget
    from ropelab.hf import extend
    from ropelab.hf.load import load_model

    cfg = _tiny_cfg(tiny_model_dir, corpus_dir, method="dynamic-yarn", factor=None, steps=1, eval_windows=0)
    summary = run_finetune(cfg, tmp_path, progress=False, log=lambda _: None)
    loaded, _ = load_model(summary["model"])
    target = HFTarget.load(summary["model"].replace("/model", "/model"), str(corpus_dir))
    assert loaded.config.ropelab["method"] == "dynamic-yarn"
    ids = torch.randint(0, 300, (1, 150), generator=torch.Generator().manual_seed(1))
    ref, _ = load_model(str(tiny_model_dir))
    ref.load_state_dict(loaded.state_dict())
    extend(ref, "dynamic-yarn")
    with torch.no_grad():
        expected = ref(ids).logits
        torch.testing.assert_close(loaded(ids).logits, expected, atol=1e-5, rtol=0)
        extend(loaded, "none")  # "as saved", not the un-extended model
        torch.testing.assert_close(loaded(ids).logits, expected, atol=1e-5, rtol=0)
    assert target.model.config.ropelab["method"] == "dynamic-yarn"


def _lab_run(cfg: FinetuneConfig, out: Path, **kwargs) -> dict:
    """``run_finetune`` on a fresh copy of the lab model (what ``ropelab finetune --model lab`` does)."""
    kwargs.setdefault("log", lambda _: None)
    return run_finetune(cfg, out, load_lab_target(cfg.model, cfg.corpus), progress=False, **kwargs)


def test_lab_model_finetunes_and_saves(tmp_path: Path) -> None:
    from ropelab.lab.checkpoints import load_checkpoint

    cfg = FinetuneConfig(
        length=256, model="lab", method="pi", steps=2, batch=2, lr=5e-4, warmup=1, eval_every=2,
        eval_windows=2, threads=1,
    )  # fmt: skip
    assert cfg.method == "linear"  # the canonical name, whatever the spelling
    summary = _lab_run(cfg, tmp_path)
    assert summary["target"]["method"] == "linear" and summary["target"]["lab_label"] == "linear"
    assert summary["target"]["params"] == {"factor": 2.0}
    first, last = summary["evals"][0], summary["evals"][-1]
    assert last["loss"] < first["loss"]  # PI zero-shot hurts; two steps already repair some of it
    assert first["loss_beyond"] is not None and first["loss_within"] is not None
    model, meta = load_checkpoint(tmp_path / "model.safetensors")
    assert meta["finetune"]["method"] == "linear" and meta["finetune"]["params"] == {"factor": 2.0}
    assert model.encoding.config()["method"] == "linear" and model.encoding.config()["factor"] == 2.0
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_split_stream_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    windows = split_stream(torch.arange(100), 30, 5)
    assert windows.shape == (3, 31) and windows[1, 0] == 30
    with pytest.raises(Exception, match="not one evaluation window"):
        split_stream(torch.arange(10), 30, 2)
    cases = [
        (["--length", "x"], "expected lengths"),
        (["--model", "lab", "--length", "512", "--corpus", "hf:wikitext"], "lab models train on"),
        (["--model", "lab", "--length", "512", "--factor", "2"], "factor = length / trained length"),
        (["--model", "lab", "--length", "512", "--strategy", "fsdp"], "several processes"),
        (["--model", "lab", "--length", "512", "--method", "nope"], "is a position encoding"),
        (["--model", "lab", "--length", "512", "--method", "yran"], "did you mean 'yarn'"),
        (["--model", "lab", "--length", "512", "--method", "llama3"], "the lab has no method 'llama3'"),
        (
            ["--model", "lab", "--length", "512", "--method", "none", "--factor", "2"],
            "does not take --factor",
        ),
        (["--model", "lab", "--length", "512", "--dtype", "float16"], "not for fine-tuning"),
        (["--model", "lab", "--length", "512", "--device", "cuda:7"], "no such CUDA device"),
        (["--model", "lab", "--length", "512", "--device", "tpu"], "unknown device"),
        (["--model", "./missing", "--length", "512"], "no such folder"),
        (["--model", "lab", "--length", "512", "--steps", "-1"], "--steps must be >= 0"),
    ]
    for args, message in cases:
        try:
            status = main(["finetune", *args, "--out", str(tmp_path / "x")])
        except SystemExit as stop:  # argparse's own errors
            status = stop.code
        assert status == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_bf16_autocast_runs_on_cpu(tmp_path: Path) -> None:
    cfg = FinetuneConfig(
        length=256, model="lab", method="yarn", steps=1, batch=2, lr=5e-4, warmup=1, eval_windows=1,
        precision="bf16", threads=1,
    )  # fmt: skip
    summary = _lab_run(cfg, tmp_path)
    assert summary["finished"] and all(torch.isfinite(torch.tensor(e["loss"])) for e in summary["evals"])


# --- hardening (issue 11) ---------------------------------------------------------------------------

_LAB = dict(
    length=256, model="lab", method="linear", steps=1, batch=2, lr=5e-4, warmup=1, eval_windows=1, threads=1
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_decay", float("nan")),
        ("weight_decay", -0.1),
        ("weight_decay", float("inf")),
        ("grad_clip", -1.0),
        ("grad_clip", float("nan")),
        ("lr", float("inf")),
        ("factor", float("inf")),
        ("min_lr_ratio", float("nan")),
    ],
)
def test_config_refuses_values_that_poison_training(field: str, value: float) -> None:
    with pytest.raises(RopeConfigError, match=field.replace("_", "-")):
        FinetuneConfig(**{**_LAB, field: value})


def test_weight_decay_nan_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    status = main(
        ["finetune", "--model", "lab", "--length", "256", "--weight-decay", "nan", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert status == 2 and "--weight-decay" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_finished_run_with_other_settings_is_refused(tmp_path: Path) -> None:
    first = _lab_run(FinetuneConfig(**_LAB), tmp_path)
    assert first["finished"]
    saved = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(RopeConfigError, match="other settings"):
        _lab_run(FinetuneConfig(**{**_LAB, "lr": 1e-3}), tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == saved  # not overwritten


@pytest.mark.parametrize("content", ["", '{"identity": {"length": 256, "mod'])
def test_torn_run_json_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str
) -> None:
    (tmp_path / "run.json").write_text(content)
    status = main(["finetune", "--model", "lab", "--length", "256", "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "run.json" in err and len(err.strip().splitlines()) == 1, err


def test_lab_model_files_follow_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        _lab_run(FinetuneConfig(**{**_LAB, "steps": 2, "save_every": 1}), tmp_path, stop_after=1)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
        _lab_run(FinetuneConfig(**{**_LAB, "steps": 2, "save_every": 1}), tmp_path)
        modes.update({p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()})
    finally:
        os.umask(old_umask)
    assert {"state.pt", "model.safetensors", "run.json", "curve.jsonl", "results.jsonl"} <= modes.keys()
    assert all(mode == 0o600 for mode in modes.values()), modes


# --- issue 12: no lab import, one vocabulary, results.jsonl, the shared flags ------------------------

SRC = Path(__file__).resolve().parents[1] / "src" / "ropelab"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth: lazy imports inside functions included)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_finetune_imports_nothing_of_the_lab() -> None:
    """finetune/ -> lab is gone (even lazily); the lab's target avoids the lab package and experiment."""
    files = sorted((SRC / "finetune").glob("*.py"))
    assert files
    for path in files:
        lab = sorted(m for m in _imports(path) if m == "ropelab.lab" or m.startswith("ropelab.lab."))
        assert not lab, f"{path.name} imports {lab}"
    target = _imports(SRC / "lab" / "finetune_target.py")
    assert not {m for m in target if m.startswith("ropelab.lab.experiment")}
    assert "ropelab.lab" not in target  # the package __init__ imports experiment, which imports this
    assert not {m for m in target if m.startswith("ropelab.finetune")}  # a protocol needs no import


def test_longest_multiple_is_the_labs() -> None:
    from ropelab.lab import LabConfig
    from ropelab.lab.finetune_target import LAB_LONGEST_MULTIPLE

    assert LabConfig().multiples[-1] == LAB_LONGEST_MULTIPLE


def test_every_alias_fine_tunes_the_lab_model_with_its_canonical_method(tmp_path: Path) -> None:
    """Each registry alias through `ropelab finetune --model lab`: the canonical name in results.jsonl and
    the checkpoint, the same resolved parameters, and (pi vs linear) the same numbers."""
    from ropelab.lab.checkpoints import read_meta
    from ropelab.registry import ALIASES

    common = ["--model", "lab", "--length", "256", "--steps", "1", "--batch-size", "1", "--lr", "5e-4",
              "--warmup", "0", "--eval-windows", "1", "--threads", "1", "--quiet"]  # fmt: skip
    rows = {}
    for name in [*ALIASES, "linear"]:
        out = tmp_path / name
        assert main(["finetune", *common, "--method", name, "--out", str(out)]) == 0
        rows[name] = _results(out)
        canonical = parse_method(name).method
        assert {r["method"] for r in rows[name]} == {canonical}, name
        assert {r["label"] for r in rows[name]} == {canonical}
        assert read_meta(out / "model.safetensors")["finetune"]["method"] == canonical
    assert rows["pi"][0]["resolved"] == rows["linear"][0]["resolved"] == {"factor": 2.0}
    assert rows["default"][0]["resolved"] == {}
    assert rows["dynamic-ntk"][0]["resolved"] == {"seq_len": 256}
    numbers = ("kind", "step", "loss", "loss_within", "loss_beyond", "train_loss", "key")
    assert [[r[k] for k in numbers] for r in rows["pi"]] == [[r[k] for k in numbers] for r in rows["linear"]]


def test_results_rows_carry_every_field_and_render(tmp_path: Path) -> None:
    from ropelab.finetune import render_report
    from ropelab.report.provenance import ROW_FIELDS, is_current

    cfg = FinetuneConfig(**{**_LAB, "steps": 2, "eval_every": 1, "save_every": 1})
    summary = _lab_run(cfg, tmp_path, stop_after=1)
    assert not summary["finished"]
    partial = _results(tmp_path)
    assert [(r["kind"], r["step"]) for r in partial] == [("eval", 0), ("eval", 1)]  # with the saved state
    _lab_run(cfg, tmp_path)
    rows = _results(tmp_path)
    assert rows[:2] == partial  # a resumed run appends, never rewrites or repeats
    assert [(r["kind"], r["step"]) for r in rows] == [("eval", 0), ("eval", 1), ("eval", 2), ("final", 2)]
    for row in rows:
        assert all(field in row for field in ROW_FIELDS) and is_current(row), row
        assert row["model"] == "lab" and len(row["model_id"]) == 64 and row["trained_length"] == 128
        assert row["corpus"]["name"] == "stdlib"
    assert rows[0]["tokens_per_s"] is None and rows[1]["tokens_per_s"] > 0 and rows[1]["train_loss"] > 0
    text = render_report([*rows, {"command": "eval", "kind": "eval", "step": 9}])
    lines = text.splitlines()
    assert lines[0].startswith("lab: linear fine-tuned at 256 tokens (trained 128; 2 steps")
    assert lines[2].split() == ["|", "step", "|", "loss", "|", "inside", "|", "beyond", "|"]
    body = [line.strip("| ").split(" | ") for line in lines[4:]]
    assert [int(b[0]) for b in body] == [0, 1, 2]  # one line per evaluation; the other command ignored
    for b, e in zip(body, summary_evals(tmp_path), strict=True):
        assert float(b[1]) == pytest.approx(e["loss"], rel=5e-4)
        assert float(b[2]) == pytest.approx(e["loss_within"], rel=5e-4)
        assert float(b[3]) == pytest.approx(e["loss_beyond"], rel=5e-4)


def summary_evals(out: Path) -> list[dict]:
    return json.loads((out / "run.json").read_text())["evals"]


def test_old_flag_spellings_give_the_same_config() -> None:
    from ropelab.cli import build_parser
    from ropelab.cli.finetune_cmd import config_from_args

    def config(*flags: str) -> FinetuneConfig:
        return config_from_args(build_parser().parse_args(["finetune", "--length", "4k", *flags]))

    old = config("--batch", "3", "--precision", "bf16", "--checkpoint-every", "7", "--method", "pi")
    new = config("--batch-size", "3", "--dtype", "bfloat16", "--save-every", "7", "--method", "linear")
    assert old == new
    assert (new.batch, new.precision, new.save_every, new.method, new.length) == (
        3,
        "bf16",
        7,
        "linear",
        4096,
    )
    assert config("--precision", "fp32") == config("--dtype", "float32") == config("--dtype", "fp32")
    assert config("--precision", "fp32").precision == "fp32"
    assert config("--device", "CUDA:1").device == "cuda:1"
