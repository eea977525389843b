"""PoSE (Zhu et al. 2023, arXiv 2309.10400) in ``ropelab finetune``: the position ids and their way into
the model (a transformers model and the lab's), resume, data parallelism, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ropelab.cli import main
from ropelab.data import RandomWindows
from ropelab.data.pose import PoseWindows, check_pose, pose_batch, pose_position_ids
from ropelab.errors import RopeConfigError
from ropelab.finetune import FinetuneConfig, run_finetune
from ropelab.lab.finetune_target import load_lab_target
from ropelab.train.distributed import Dist, ShardedBatches


def _draws(length: int, target: int, chunks: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([pose_position_ids(length, target, chunks=chunks, generator=g) for _ in range(n)])


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_ids_strictly_increase_inside_the_target_and_cover_it(chunks: int) -> None:
    length, target = 16, 64
    ids = _draws(length, target, chunks, 400)  # [400, 16]
    assert ids.dtype == torch.int64 and ids.shape == (400, length)
    assert bool((ids[:, 1:] > ids[:, :-1]).all())  # strictly increasing within every window
    assert int(ids.min()) == 0 and int(ids.max()) <= target - 1 and bool((ids[:, 0] == 0).all())
    steps = ids[:, 1:] - ids[:, :-1]
    assert bool(((steps > 1).sum(1) <= chunks - 1).all())  # a skip only between chunks
    if chunks == 1:
        assert bool((ids == torch.arange(length)).all())  # one chunk: no skip at all
        return
    assert set(ids.flatten().tolist()) == set(range(target))  # every position of the target seen
    # and every relative distance up to the target's longest (target - 1, the last id minus the first)
    distances = set((ids[:, :, None] - ids[:, None, :]).clamp(min=0).flatten().tolist())
    assert distances == set(range(target))
    # the reference implementation's law for 2 chunks: first chunk 1..ceil(L/2) tokens, skip U{0..target-L}
    if chunks == 2:
        first = (steps > 1).int().argmax(1) + 1  # where the second chunk begins (a skip of 0 hides it)
        jumped = (steps > 1).any(1)
        assert int(first[jumped].min()) >= 1 and int(first[jumped].max()) <= (length + 1) // 2
        last_skip = ids[:, -1] - (length - 1)
        assert int(last_skip.min()) == 0 and int(last_skip.max()) == target - length


def test_ids_are_a_function_of_seed_and_step() -> None:
    a = pose_batch(3, 32, 256, seed=5, step=7)
    assert a.shape == (3, 32) and torch.equal(a, pose_batch(3, 32, 256, seed=5, step=7))
    assert not torch.equal(a, pose_batch(3, 32, 256, seed=5, step=8))
    assert not torch.equal(a, pose_batch(3, 32, 256, seed=6, step=7))
    assert torch.equal(pose_batch(2, 32, 32, seed=1, step=0), torch.arange(32).expand(2, 32))  # no skips
    # the PoSE source: the random windows' text unchanged, ids of the step; resumes by the step
    tokens = torch.arange(5000) % 251
    plain = RandomWindows(tokens, batch_size=4, length=32, seed=3)
    pose = PoseWindows(tokens, batch_size=4, length=32, target=128, seed=3)
    x, y = plain.next_batch()
    px, py, ids = pose.next_batch()
    assert (
        torch.equal(x, px) and torch.equal(y, py) and torch.equal(ids, pose_batch(4, 32, 128, seed=3, step=0))
    )
    second = pose.next_batch()
    again = PoseWindows(tokens, batch_size=4, length=32, target=128, seed=3)
    again.load_state_dict({"step": 1, "seed": 3})
    assert all(torch.equal(a, b) for a, b in zip(again.next_batch(), second, strict=True))


def test_skipped_text_reads_a_target_window_at_the_ids() -> None:
    """``text="skipped"``: the text jumps where the ids do; a target is its token's successor."""
    tokens = torch.arange(10_000)  # token = its place in the stream
    inputs, targets, ids = PoseWindows(
        tokens, batch_size=8, length=32, target=256, seed=1, text="skipped"
    ).batch_at(4)
    starts = inputs[:, :1] - ids[:, :1]  # where each row's 256-token stretch begins
    assert torch.equal(inputs, starts + ids) and torch.equal(targets, inputs + 1)
    assert bool((ids[:, -1] > 31).any())  # some rows did skip
    # no skips: the plain random windows, token for token
    plain = RandomWindows(tokens, batch_size=8, length=32, seed=1).batch_at(4)
    same = PoseWindows(tokens, batch_size=8, length=32, target=32, seed=1, text="skipped").batch_at(4)
    assert torch.equal(same[0], plain[0]) and torch.equal(same[1], plain[1])
    with pytest.raises(RopeConfigError, match="--pose-text"):
        PoseWindows(tokens, batch_size=1, length=32, target=64, seed=0, text="random")


def test_ranks_take_their_rows_of_ids_with_their_windows() -> None:
    """Under DDP/FSDP each rank keeps its rows of the global batch: the ids travel with their windows."""
    tokens = torch.arange(5000) % 251

    def source() -> PoseWindows:
        return PoseWindows(tokens, batch_size=4, length=32, target=512, seed=0, text="skipped")

    whole = source().next_batch()
    parts = [ShardedBatches(source(), Dist(rank=r, world=2)).next_batch() for r in (0, 1)]
    for i in range(3):
        assert torch.equal(torch.cat([parts[0][i], parts[1][i]]), whole[i])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--length", "512", "--pose", "128"], "--pose 128 (the target length) must be >= --length 512"),
        (["--length", "128", "--pose", "x"], "expected lengths"),
        (["--length", "128", "--pose-chunks", "3"], "--pose-chunks and --pose-text need --pose"),
        (["--length", "128", "--pose-text", "skipped"], "--pose-chunks and --pose-text need --pose"),
        (["--length", "128", "--pose", "512", "--pose-chunks", "0"], "--pose-chunks must be >= 1"),
        (["--length", "2", "--pose", "512", "--pose-chunks", "3"], "cannot be split into 3 PoSE chunks"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    try:
        status = main(["finetune", "--model", "lab", *args, "--out", str(tmp_path / "x")])
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
    with pytest.raises(RopeConfigError, match="--pose"):
        check_pose(64, 32)


def _lab(out: Path, stop_after: int | None = None, **over) -> dict:
    """``ropelab finetune --model lab``: 4 steps, 2 windows a step, a state every 2 steps."""
    base = dict(length=128, model="lab", method="pi", steps=4, batch=2, lr=1e-3, warmup=1, eval_every=2,
                eval_windows=2, save_every=2, threads=1)  # fmt: skip
    cfg = FinetuneConfig(**{**base, **over})
    target = load_lab_target("lab")
    return run_finetune(cfg, out, target, progress=False, log=lambda _: None, stop_after=stop_after)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _train_curve(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]


def test_pose_without_skips_equals_ordinary_finetuning_bitwise(tmp_path: Path) -> None:
    """target == length: every id is 0..L-1, passed explicitly to the model: the same run, bit for bit."""
    plain = _lab(tmp_path / "plain", length=256, steps=3, eval_every=3)
    pose = _lab(tmp_path / "pose", length=256, pose=256, steps=3, eval_every=3)
    assert plain["final_loss"] == pose["final_loss"] and plain["evals"] == pose["evals"]
    strip = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in _train_curve(tmp_path / "plain")]
    assert strip == [
        {k: v for k, v in r.items() if k != "tokens_per_s"} for r in _train_curve(tmp_path / "pose")
    ]
    a, b = (
        _weights(tmp_path / "plain" / "model.safetensors"),
        _weights(tmp_path / "pose" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pose_resumes_to_the_uninterrupted_run_and_records_itself(tmp_path: Path) -> None:
    straight = _lab(tmp_path / "straight", pose=512)
    out = tmp_path / "resumed"
    assert not _lab(out, pose=512, stop_after=3)["finished"]
    again = _lab(out, pose=512)
    assert again["finished"] and again["resumed_from"] == 3
    assert again["evals"] == straight["evals"] and again["final_loss"] == straight["final_loss"]
    a, b = _weights(tmp_path / "straight" / "model.safetensors"), _weights(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the method is set for the target (PI factor 512 / 128), the held-out loss measured at 512
    assert straight["target"]["params"] == {"factor": 4.0} and straight["identity"]["pose"] == 512
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["length"] for r in rows} == {512}
    settings = {(r["finetune"]["length"], r["finetune"]["pose"], r["finetune"]["pose_chunks"]) for r in rows}
    assert settings == {(128, 512, 2)} and {r["finetune"]["pose_text"] for r in rows} == {"contiguous"}
    assert straight["evals"][-1]["loss_beyond"] is not None  # positions >= T = 128 were scored
    # PoSE's ids changed training: not the run without them
    plain = _lab(tmp_path / "plain", length=128, method="none")
    assert plain["final_loss"] != straight["final_loss"]
    # a run without PoSE keeps the identity it had before PoSE existed; another --pose is another run
    assert "pose" not in plain["identity"]
    with pytest.raises(RopeConfigError, match="pose"):
        _lab(out, pose=1024)


def test_position_ids_reach_a_transformers_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """HFTarget.logits passes PoSE's ids, and the second chunk still attends to the first (transformers
    would read a jump in position_ids as a new packed sequence without an explicit attention mask)."""
    from ropelab.finetune import HFTarget
    from ropelab.registry import parse_method

    target = HFTarget.load(str(tiny_model_dir), "stdlib")
    target.apply_method(parse_method("yarn"), 256)
    model = target.model.eval()
    ids = torch.randint(5, 200, (1, 24), generator=torch.Generator().manual_seed(0))
    plain = torch.arange(24)[None]
    skipped = torch.cat([torch.arange(8), torch.arange(8, 24) + 100])[None]
    with torch.no_grad():
        base = target.logits(model, ids)
        assert torch.equal(target.logits(model, ids, plain), base)  # explicit 0..s-1: the same numbers
        jumped = target.logits(model, ids, skipped)
        assert not torch.allclose(jumped[0, 8:], base[0, 8:])  # the ids reach the rotary embedding
        torch.testing.assert_close(jumped[0, :8], base[0, :8], rtol=0, atol=1e-6)  # first chunk as before
        other = ids.clone()
        other[0, 0] = ids[0, 0] + 1  # a token of the first chunk changes the second chunk's logits
        assert not torch.allclose(target.logits(model, other, skipped)[0, -1], jumped[0, -1])


def test_transformers_model_pose_without_skips_equals_ordinary_bitwise(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The same for a transformers model: explicit ids 0..L-1 and an all-ones mask change no bit."""
    from ropelab.data import is_validation, stdlib_files

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    files = stdlib_files()
    for p in [p for p in files if is_validation(p.name)][:2] + [
        p for p in files if not is_validation(p.name)
    ][:4]:
        (corpus / p.name).write_bytes(p.read_bytes())
    base = dict(length=64, model=str(tiny_model_dir), method="yarn", factor=2.0, corpus=str(corpus), steps=3,
                lr=2e-3, batch=2, warmup=1, eval_every=3, eval_windows=1, threads=1)  # fmt: skip
    runs = {}
    for name, pose in (("plain", None), ("pose", 64)):
        runs[name] = run_finetune(
            FinetuneConfig(**base, pose=pose), tmp_path / name, progress=False, log=lambda _: None
        )
    assert runs["plain"]["evals"] == runs["pose"]["evals"]
    assert runs["plain"]["final_loss"] == runs["pose"]["final_loss"]
    a = _weights(tmp_path / "plain" / "model" / "model.safetensors")
    b = _weights(tmp_path / "pose" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and with skips the same model trains on other numbers, the factor set for the target
    pose = run_finetune(
        FinetuneConfig(**{**base, "factor": None}, pose=128),
        tmp_path / "skips",
        progress=False,
        log=lambda _: None,
    )
    assert pose["target"]["params"] == {"factor": 2.0} and pose["final_loss"] != runs["plain"]["final_loss"]


def test_a_target_without_position_ids_is_refused_under_pose(tmp_path: Path) -> None:
    target = load_lab_target("lab")
    target.logits = lambda model, inputs: model(inputs)  # an older target: no position ids
    cfg = FinetuneConfig(length=128, pose=512, model="lab", method="pi", steps=1, eval_windows=0, threads=1)
    with pytest.raises(RopeConfigError, match="--pose needs a target whose logits"):
        run_finetune(cfg, tmp_path, target, progress=False, log=lambda _: None)
