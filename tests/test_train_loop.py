"""The training loop: determinism, exact resume, evaluation that leaves the RNG alone."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from ropelab.errors import RopeConfigError
from ropelab.train import run_loop, set_determinism
from ropelab.train.optim import adamw, warmup_cosine


class Noisy:
    """A batch source whose batches come from a seeded stream with a saved position."""

    def __init__(self, seed: int) -> None:
        self.seed, self.step = seed, 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.step)
        self.step += 1
        x = torch.randn(16, 4, generator=g)
        return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(16, generator=g)

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = state["step"]


def _curve(result) -> list[tuple[int, float, float]]:
    """(step, loss, lr) of a run: what must repeat exactly (tokens/s is a timing)."""
    return [(h["step"], h["loss"], h["lr"]) for h in result.history]


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    # dropout draws from the global RNG: resume must restore it for the runs to agree
    return ((model(x).squeeze(-1) - y) ** 2).mean()


def _run(steps: int, state: Path | None, stop_after: int | None = None, evals: list | None = None):
    set_determinism(0, threads=1)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 1))
    opt = adamw(model, lr=1e-2, weight_decay=0.1)
    sched = warmup_cosine(opt, warmup=3, steps=steps)

    def evaluate(step: int) -> dict:
        if evals is not None:
            evals.append(step)
        torch.rand(3)  # must not disturb the training RNG
        return {"w": float(model[0].weight.sum())}

    result = run_loop(
        model,
        Noisy(1),
        _loss,
        opt,
        sched,
        steps=steps,
        state_path=state,
        checkpoint_every=4,
        log_every=1,
        eval_fn=evaluate,
        eval_every=5,
        stop_after=stop_after,
        meta={"run": "test"},
    )
    return model, result


def test_same_seed_same_run() -> None:
    m1, r1 = _run(12, None)
    m2, r2 = _run(12, None)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    assert all(
        torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True)
    )
    assert [e["step"] for e in r1.evals] == [0, 5, 10, 12]


def test_resume_equals_straight_run(tmp_path: Path) -> None:
    straight, r_straight = _run(13, None)
    state = tmp_path / "state.pt"
    _, partial = _run(13, state, stop_after=6)
    assert partial.history[-1]["step"] == 6 and state.exists()
    evals: list[int] = []
    resumed, r_resumed = _run(13, state, evals=evals)
    assert r_resumed.resumed_from == 6
    assert 0 not in evals  # step-0 and step-5 evaluations came back with the state
    assert _curve(r_resumed) == _curve(r_straight)
    assert r_resumed.evals == r_straight.evals
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a finished state: running again trains nothing and returns the same result
    _, again = _run(13, state)
    assert _curve(again) == _curve(r_straight) and again.resumed_from == 13


def test_state_of_another_run_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    _run(4, state)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RopeConfigError, match="another run"):
        run_loop(model, Noisy(1), _loss, opt, None, steps=4, state_path=state, meta={"run": "other"})


def test_non_finite_loss_is_a_clear_error() -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RopeConfigError, match="learning rate"):
        run_loop(model, Noisy(1), lambda m, b: m(b[0]).sum() * float("nan"), opt, None, steps=2)


def test_warmup_cosine_schedule() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, warmup=4, steps=20, min_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_adamw_groups_exclude_named_prefixes() -> None:
    model = nn.ModuleDict({"encoding": nn.Embedding(4, 3), "proj": nn.Linear(3, 3)})
    opt = adamw(model, lr=1e-3, weight_decay=0.1, no_decay=("encoding.",))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model["proj"].weight) in decayed
    assert id(model["encoding"].weight) not in decayed and id(model["proj"].bias) not in decayed


def test_history_reports_throughput() -> None:
    _, result = _run(4, None)
    assert all(h["tokens_per_s"] > 0 for h in result.history)


def test_grad_accumulation_equals_one_big_batch() -> None:
    """Two micro-batches of 2 rows give the same step as one batch of 4 (mean losses)."""
    set_determinism(0, threads=1)
    base = nn.Linear(4, 1)
    x, y = torch.randn(4, 4, generator=torch.Generator().manual_seed(1)), torch.randn(4, 1)

    class Fixed:
        def next_batch(self):
            return x, y

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    def loss_fn(m, batch):
        return ((m(batch[0]) - batch[1]) ** 2).mean()

    results = []
    for accum in (1, 2):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        r = run_loop(model, Fixed(), loss_fn, opt, None, steps=3, log_every=1, grad_accum=accum)
        results.append((model.weight.detach().clone(), [h["loss"] for h in r.history]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert results[0][1] == pytest.approx(results[1][1], abs=1e-6)
    with pytest.raises(RopeConfigError, match="does not split"):
        run_loop(copy.deepcopy(base), Fixed(), loss_fn, opt, None, steps=1, grad_accum=3)


# --- hardening (issue 11): what a resume state may hold, a loss or weights that turn non-finite -----


class _Planted:
    """Unpickling this calls ``open(marker, "w")``: code that runs on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_state_does_not_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    state = tmp_path / "state.pt"
    torch.save({"version": 1, "step": 2, "meta": {"run": "test"}, "x": _Planted(marker)}, state)
    with pytest.raises(RopeConfigError, match="not a ropelab resume state"):
        _run(4, state)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_state_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    state = tmp_path / "state.pt"
    _run(4, state, stop_after=2)
    data = state.read_bytes()
    state.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(RopeConfigError, match="damaged") as err:
        _run(4, state)
    assert "\n" not in str(err.value) and str(state) in str(err.value)


def test_state_holds_only_what_weights_only_loading_accepts(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    _run(6, state, stop_after=3)
    loaded = torch.load(state, map_location="cpu", weights_only=True)  # raises on anything else
    assert loaded["step"] == 3 and loaded["optimizer"]["state"]
    assert not list(tmp_path.glob("*.tmp"))


def test_negative_or_nan_grad_clip_is_refused() -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(RopeConfigError, match="grad_clip"):
            run_loop(model, Noisy(1), _loss, opt, None, steps=1, grad_clip=bad)


def _poisoned_run(tmp_path: Path, steps: int, poison_at: int):
    """A run whose weight decay turns NaN in step ``poison_at`` (1-based): that step's update makes
    every decayed weight NaN, while its loss (computed before the update) is still finite."""
    set_determinism(0, threads=1)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = adamw(model, lr=1e-2, weight_decay=0.1)
    source = Noisy(1)

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        if source.step == poison_at:
            opt.param_groups[0]["weight_decay"] = float("nan")
        return _loss(m, batch)

    state = tmp_path / "state.pt"
    run = lambda: run_loop(  # noqa: E731
        model, source, loss_fn, opt, None, steps=steps, state_path=state, checkpoint_every=1, log_every=1
    )
    return run, state


def test_weights_that_turn_non_finite_stop_the_run_and_keep_the_last_good_state(tmp_path: Path) -> None:
    run, state = _poisoned_run(tmp_path, steps=6, poison_at=3)
    with pytest.raises(RopeConfigError, match="not finite after step 3") as err:
        run()
    assert "\n" not in str(err.value)
    kept = torch.load(state, weights_only=True)
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values())


def test_non_finite_weights_after_the_last_step_are_not_returned_as_a_result(tmp_path: Path) -> None:
    run, state = _poisoned_run(tmp_path, steps=3, poison_at=3)
    with pytest.raises(RopeConfigError, match="not finite"):
        run()
    assert torch.load(state, weights_only=True)["step"] == 2
