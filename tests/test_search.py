"""``ropelab search`` (issue 15): LongRoPE's evolutionary search of per-pair rescale factors.

Properties: seeds are PI / NTK / YaRN as ropelab computes them; every candidate is monotone and bounded;
the search is deterministic for a seed; a resumed search ends where an uninterrupted one does; it beats its
seeds on a synthetic objective with a known optimum and on a tiny model's own loss; the exported
``longrope`` config loaded by transformers gives ropelab's logits.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch

from ropelab.errors import RopeConfigError
from ropelab.search import (
    Candidate,
    Objective,
    SearchSettings,
    SearchSpace,
    Store,
    candidate_rope,
    evolve,
    method_factors,
    seed_candidates,
)

HEAD_DIM, BASE, TRAINED, SCALE = 32, 10000.0, 128, 8.0
SPACE = SearchSpace(HEAD_DIM // 2, SCALE)


def _seeds(space: SearchSpace = SPACE) -> dict[str, Candidate]:
    return seed_candidates(space, head_dim=HEAD_DIM, base=BASE, trained=TRAINED)


def _optimum(n: int = HEAD_DIM // 2, s: float = SCALE) -> list[float]:
    """A monotone optimum none of the seeds has: slow pairs near s, fast pairs near 1, a kink between."""
    return [1.0 + (s - 1.0) * (i / (n - 1)) ** 3 for i in range(n)]


def _synthetic(calls: list[Candidate] | None = None) -> Objective:
    target = _optimum()

    def loss(c: Candidate) -> float:
        if calls is not None:
            calls.append(c)
        return sum((math.log(f) - math.log(t)) ** 2 for f, t in zip(c.factors, target, strict=True))

    return Objective(loss, {"objective": "synthetic"})


# ------------------------------------------------------------------------------------- space and seeds
def test_seeds_are_ropelabs_own_pi_ntk_yarn() -> None:
    seeds = _seeds()
    assert list(seeds) == ["linear", "ntk", "yarn"]
    assert seeds["linear"].factors == pytest.approx([SCALE] * 16, rel=1e-6)
    d = HEAD_DIM  # NTK: base * s^(d/(d-2)) divides pair i by s^(2i/(d-2))
    assert seeds["ntk"].factors == pytest.approx([SCALE ** (2 * i / (d - 2)) for i in range(16)], rel=1e-5)
    yarn = seeds["yarn"].factors
    assert yarn[0] == pytest.approx(1.0, abs=1e-6) and yarn[-1] == pytest.approx(SCALE, rel=1e-6)
    for cand in seeds.values():
        assert SPACE.violations(cand) == []
    # the seed as a longrope Rope gives the method's own frequencies (float32 rounding apart)
    rope = candidate_rope(seeds["yarn"], head_dim=HEAD_DIM, base=BASE, trained=TRAINED, scale=SCALE)
    from ropelab.rope import Rope

    ours = rope.frequencies(seq_len=TRAINED * 8)[0]
    theirs = Rope(
        "yarn", head_dim=HEAD_DIM, base=BASE, factor=SCALE, original_max_position_embeddings=TRAINED
    )
    assert torch.allclose(ours, theirs.frequencies()[0], rtol=1e-6)
    with pytest.raises(RopeConfigError, match="factor must be >= 1"):
        method_factors("linear", head_dim=HEAD_DIM, base=BASE, scale=0.5, trained=TRAINED)


def test_mutation_and_crossover_keep_the_constraints() -> None:
    space = SearchSpace(16, SCALE, n_hat_choices=(0, 4, 16))
    rng = random.Random(3)
    pool = list(_seeds(space).values())
    for _ in range(400):
        a, b = rng.sample(pool, 2)
        child = space.mutate(a, rng) if rng.random() < 0.5 else space.crossover(a, b, rng)
        if child is None:
            continue
        assert space.violations(child) == [], child
        assert all(1.0 <= f <= SCALE for f in child.factors)
        assert all(x <= y for x, y in itertools.pairwise(child.factors))
        pool.append(child)
    assert len({c.fingerprint for c in pool}) > 200
    assert {c.n_hat for c in pool} == {0, 4, 16}
    with pytest.raises(RopeConfigError, match="decrease"):
        space.check(Candidate([2.0, 1.0] + [SCALE] * 14))
    with pytest.raises(RopeConfigError, match=r"outside \[1, 8\]"):
        space.check(Candidate([0.5] + [SCALE] * 15))


# ------------------------------------------------------------------------------------------ the loop
def test_deterministic_for_a_seed_and_every_candidate_in_the_space() -> None:
    settings = SearchSettings(population=8, budget=60, seed=5)
    one = evolve(_synthetic(), SPACE, _seeds(), settings)
    two = evolve(_synthetic(), SPACE, _seeds(), settings)
    assert [(e.candidate, e.loss, e.origin) for e in one.evaluated] == [
        (e.candidate, e.loss, e.origin) for e in two.evaluated
    ]
    assert len(one.evaluated) == 60 and len({e.candidate.fingerprint for e in one.evaluated}) == 60
    assert all(SPACE.violations(e.candidate) == [] for e in one.evaluated)
    other = evolve(_synthetic(), SPACE, _seeds(), SearchSettings(population=8, budget=60, seed=6))
    assert [e.candidate for e in other.evaluated] != [e.candidate for e in one.evaluated]
    bests = [b for _, _, b in one.best_by_generation]
    assert bests == sorted(bests, reverse=True) and bests[-1] == one.best.loss


def test_beats_its_seeds_on_a_known_optimum() -> None:
    result = evolve(_synthetic(), SPACE, _seeds(), SearchSettings(population=16, budget=400, seed=0))
    best_seed = min(result.seeds.values())
    assert result.best.loss < 0.5 * best_seed, (result.best.loss, result.seeds)


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    settings = SearchSettings(population=8, budget=40, seed=1)
    straight = evolve(_synthetic(), SPACE, _seeds(), settings)

    class Killed(Exception):
        pass

    calls: list[Candidate] = []

    def dies_after_17(c: Candidate) -> float:
        if len(calls) == 17:
            raise Killed
        return _synthetic(calls).loss(c)

    path = tmp_path / "results.jsonl"
    with pytest.raises(Killed):
        evolve(Objective(dies_after_17, {}), SPACE, _seeds(), settings, store=Store(path, "k"))
    assert len(path.read_text().splitlines()) == 17  # every finished evaluation was written
    calls.clear()
    resumed = evolve(_synthetic(calls), SPACE, _seeds(), settings, store=Store(path, "k"))
    assert len(calls) == 40 - 17 and resumed.computed == 23
    assert [(e.candidate, e.loss) for e in resumed.evaluated] == [
        (e.candidate, e.loss) for e in straight.evaluated
    ]
    assert resumed.best.candidate == straight.best.candidate
    # a larger budget continues; another key (a changed setting) recomputes from scratch
    calls.clear()
    longer = evolve(
        _synthetic(calls),
        SPACE,
        _seeds(),
        SearchSettings(population=8, budget=50, seed=1),
        store=Store(path, "k"),
    )
    assert len(calls) == 10 and len(longer.evaluated) == 50
    calls.clear()
    evolve(_synthetic(calls), SPACE, _seeds(), settings, store=Store(path, "another"))
    assert len(calls) == 40
    # rows without the provenance fields (or of an older layout) are not reused where rows are stamped
    assert len(Store(path, "k").losses) == 50 and Store(path, "k", stamped=True).losses == {}


def test_bad_settings_are_refused() -> None:
    for bad in ({"population": 1}, {"budget": 0}, {"parents": 20}, {"p_mutate": 0.0}):
        with pytest.raises(RopeConfigError):
            SearchSettings(**bad)
    with pytest.raises(RopeConfigError, match="scale > 1"):
        SearchSpace(16, 1.0)


# ---------------------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def tiny_search(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from ropelab.search import search_model

    out = tmp_path_factory.mktemp("search")
    run = search_model(
        str(tiny_model_dir),
        target=192,
        settings=SearchSettings(population=4, budget=12, seed=0),
        out=out,
        docs=1,
        score_last=64,
        progress=False,
    )
    return run


def test_tiny_model_search_beats_its_seeds_on_its_own_objective(tiny_search) -> None:
    run = tiny_search
    assert len(run.result.evaluated) == 12 and set(run.result.seeds) == {"linear", "ntk", "yarn"}
    assert run.best_loss < min(run.result.seeds.values())
    rows = [json.loads(line) for line in (run.out / "results.jsonl").read_text().splitlines()]
    from ropelab.report.provenance import ROW_FIELDS, is_current

    assert len(rows) == 12 and all(is_current(r) and set(ROW_FIELDS) <= set(r) for r in rows)
    assert {r["command"] for r in rows} == {"search"} and {r["method"] for r in rows} == {"longrope"}
    best = json.loads((run.out / "best.json").read_text())
    assert best["rope_parameters"]["long_factor"] == list(run.best.factors)
    assert best["vllm"]["hf_overrides"]["rope_parameters"]["rope_type"] == "longrope"
    assert "GGUF" in best["llama.cpp"]["refused"] and "n_hat" in best["n_hat"]
    assert (run.out / "search_best.png").stat().st_size > 0


def test_exported_longrope_config_reproduces_ropelabs_logits(tiny_search, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ropelab.hf import extend
    from ropelab.search import longrope_spec

    run = tiny_search
    ids = torch.randint(0, 300, (1, 150), generator=torch.Generator().manual_seed(0))  # > 64: long factors
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    extend(ours, longrope_spec(run.best, scale=run.space.scale))
    theirs = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, rope_parameters=run.rope_parameters, max_position_embeddings=run.target
    ).eval()
    assert theirs.config.rope_parameters["rope_type"] == "longrope"
    with torch.no_grad():
        a, b = ours(ids).logits, theirs(ids).logits
    assert (a - b).abs().max() < 1e-5


# ------------------------------------------------------------------------------------------ n_hat
def test_unscaled_positions_are_plain_rope_rows_and_no_stack_carries_them() -> None:
    """LongRoPE's n_hat as ropelab's ``unscaled_positions``: rows below it are plain RoPE's (scaling 1),
    the rest the longrope rows, through the table cache or not; export refuses it, naming the way out."""
    from ropelab.export import to_hf
    from ropelab.rope import Rope

    geo = {"head_dim": HEAD_DIM, "base": BASE}
    long = {"factor": SCALE, "original_max_position_embeddings": TRAINED, "long_factor": _optimum()}
    long["short_factor"] = [1.0] * 16
    mixed = Rope("longrope", **geo, **long, unscaled_positions=7)
    pos = torch.arange(3 * TRAINED)
    plain = Rope("default", **geo).cos_sin(pos)
    scaled = Rope("longrope", **geo, **long).cos_sin(pos, seq_len=3 * TRAINED)
    for cache in (True, False):
        cos, sin = mixed.cos_sin(pos, seq_len=3 * TRAINED, cache=cache)
        assert torch.equal(cos[:7], plain[0][:7]) and torch.equal(sin[:7], plain[1][:7])
        assert torch.equal(cos[7:], scaled[0][7:]) and torch.equal(sin[7:], scaled[1][7:])
    with pytest.raises(RopeConfigError, match=r"unscaled_positions=7.*no field"):
        to_hf(mixed)
    with pytest.raises(RopeConfigError, match="does not use 'unscaled_positions'"):
        Rope("yarn", **geo, factor=2.0, original_max_position_embeddings=TRAINED, unscaled_positions=4)
    with pytest.raises(RopeConfigError, match="unscaled_positions must be >= 0"):
        Rope("longrope", **geo, **long, unscaled_positions=-1)
    from ropelab.search import exports

    done = exports(mixed)
    assert "refused" in done["rope_parameters"] and "refused" in done["vllm"]
    assert done["nearest"]["rope_parameters"]["long_factor"] == _optimum()


def test_unscaled_positions_on_a_model_keep_its_own_logits_there(tiny_model_dir: Path) -> None:
    """Causal attention: with n_hat = 10 the first 10 positions see only plain-RoPE positions, so their
    logits are the unmodified model's; with n_hat covering the sequence every logit is (scaling 1)."""
    from transformers import AutoModelForCausalLM

    from ropelab.hf import extend
    from ropelab.search import longrope_spec

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(0, 300, (1, 150), generator=torch.Generator().manual_seed(1))  # > 64: long factors
    with torch.no_grad():
        own = model(ids).logits
        factors = [1.0 + 3.0 * i / 7 for i in range(8)]
        extend(model, longrope_spec(Candidate(factors, 10), scale=4.0))
        part = model(ids).logits
        extend(model, longrope_spec(Candidate(factors, 150), scale=4.0))
        whole = model(ids).logits
        extend(model, longrope_spec(Candidate(factors, 0), scale=4.0))
        none = model(ids).logits
    assert (part[:, :10] - own[:, :10]).abs().max() < 1e-5 < (part[:, 10:] - own[:, 10:]).abs().max()
    assert (whole - own).abs().max() < 1e-5
    assert (none[:, :10] - own[:, :10]).abs().max() > 1e-3


def test_search_explores_n_hat_and_finds_a_known_one() -> None:
    space = SearchSpace(16, SCALE, n_hat_choices=(0, 2, 8, 32))
    target = _optimum()

    def loss(c: Candidate) -> float:
        return sum((math.log(f) - math.log(t)) ** 2 for f, t in zip(c.factors, target, strict=True)) + (
            0.0 if c.n_hat == 8 else 0.5
        )

    result = evolve(Objective(loss, {}), space, _seeds(space), SearchSettings(population=16, budget=200))
    assert {e.candidate.n_hat for e in result.evaluated} == {0, 2, 8, 32}
    assert result.best.candidate.n_hat == 8 and result.best.loss < min(result.seeds.values())


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_searches_the_lab_model_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ropelab.cli import main

    out = tmp_path / "lab"
    argv = ["search", "--model", "lab", "--target", "256", "--budget", "4", "--population", "2", "--quiet"]
    argv += ["--n-hat", "0,4"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "seed yarn" in text and "searched (best)" in text and "longrope" in text
    best = json.loads((out / "best.json").read_text())
    assert best["evaluations"] == 4 and best["rope_parameters"]["factor"] == 2.0
    assert main([*argv, "--out", str(out)]) == 0  # resumed: nothing computed again
    assert "(0 computed now)" in capsys.readouterr().out
    bad_inputs = (["--target", "100"], ["--target", "256", "--budget", "0"], ["--target", "9999"])
    for bad in (*bad_inputs, ["--target", "256", "--n-hat", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            code = main(["search", "--model", "lab", *bad, "--out", str(tmp_path / "x")])
            raise SystemExit(code)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err and "Traceback" not in err


def test_exported_longrope_far_out_with_float32_angles(tiny_search, tiny_model_dir: Path) -> None:
    """Far beyond the trained length a float32 angle ``p * theta`` is off by up to half an ulp, so ropelab's
    float64 tables and transformers' float32 ones part (SmolLM2 at 8448 tokens: logits 1e-3 apart); with
    ``precision="float32"`` ropelab's attention route computes transformers' arithmetic and equals it."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from ropelab.hf import extend, make_extension
    from ropelab.search import longrope_spec

    run = tiny_search
    ids = torch.randint(0, 300, (1, 1536), generator=torch.Generator().manual_seed(1))
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    theirs = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, rope_parameters=run.rope_parameters, max_position_embeddings=run.target
    ).eval()
    ext = make_extension(ours.config, longrope_spec(run.best, scale=run.space.scale))
    with torch.no_grad():
        b = theirs(ids).logits
        extend(ours, ext)
        exact = ours(ids).logits
        extend(ours, dataclasses.replace(ext, precision="float32"))
        same = ours(ids).logits
    assert (exact - b).abs().max() > 0  # the float32 angles differ out here
    assert (same - b).abs().max() < 1e-6
    assert dataclasses.replace(ext, precision="float32").resolved()["precision"] == "float32"
    assert "precision" not in ext.resolved()  # the default leaves every row and key as it was
    with pytest.raises(RopeConfigError, match="precision must be"):
        dataclasses.replace(ext, precision="float16")
