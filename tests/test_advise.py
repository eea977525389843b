"""``ropelab advise`` (issue 15): the ranking rule, the default grid, a run on the tiny model (ranks follow
the losses, ties where paired intervals hold 0, configs that transformers loads back, a rerun that computes
nothing) and the command's bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ropelab.advise import default_factors, default_grid, rank_ties, self_extend_group

TINY_TARGET = 256  # the tiny model's trained length is 64: s = 4


# ------------------------------------------------------------------------------------ pure pieces
def _interval(diff: float, low: float, high: float) -> dict:
    return {"difference": diff, "low": low, "high": high, "excludes_zero": low > 0 or high < 0}


def test_ranks_follow_the_losses_and_a_tie_is_an_interval_holding_zero() -> None:
    losses = {"a": 1.0, "b": 1.01, "c": 1.2, "d": 1.21, "e": 1.5}
    # b is not different from a; c is worse than a; d is not different from c; e is worse than c
    table = {
        "a": {
            "b": _interval(0.01, -0.02, 0.04),
            "c": _interval(0.2, 0.1, 0.3),
            "d": _interval(0.21, 0.1, 0.3),
            "e": _interval(0.5, 0.4, 0.6),
        },
        "c": {"d": _interval(0.01, -0.05, 0.07), "e": _interval(0.3, 0.2, 0.4)},
        "e": {},
    }
    asked = []

    def paired(head, others):
        asked.append((head, list(others)))
        return {k: table[head][k] for k in others}

    rows = rank_ties(losses, paired)
    assert [(r["label"], r["rank"], r["tie"], r["head"]) for r in rows] == [
        ("a", 1, True, "a"),
        ("b", 1, True, "a"),
        ("c", 2, True, "c"),
        ("d", 2, True, "c"),
        ("e", 3, False, "e"),
    ]
    assert asked == [("a", ["b", "c", "d", "e"]), ("c", ["d", "e"])]  # each head against the methods after it
    # a rank is a run in loss order: d, not different from a, still ranks below c, which is worse than a
    table["a"]["d"] = _interval(0.21, -0.1, 0.5)
    rows = rank_ties(losses, lambda h, o: {k: table[h][k] for k in o})
    assert [r["rank"] for r in rows] == [1, 1, 2, 2, 3]
    # no interval (fewer than 3 documents): never "better", a tie
    none = {"difference": 0.3, "low": None, "high": None, "excludes_zero": False}
    rows = rank_ties({"x": 1.0, "y": 1.3}, lambda h, o: dict.fromkeys(o, none))
    assert [(r["rank"], r["tie"]) for r in rows] == [(1, True), (1, True)]


def test_default_grid() -> None:
    assert default_factors(16384, 8192) == (2.0, 4.0)  # SmolLM2 at 16k: YaRN s = 2 and 4, as the issue asks
    assert default_factors(12288, 8192) == (1.5, 2.0)
    assert default_factors(256, 64) == (4.0, 8.0)
    # Self-Extend's reach W + (L - W) / G within the trained length (W = L0 / 4)
    for target, trained in ((16384, 8192), (32768, 8192), (256, 64), (1000, 64)):
        g = self_extend_group(target, trained)
        w = trained // 4
        assert w + (target - w) / g <= trained and (g == 2 or w + (target - w) / (g // 2) > trained)
    labels = [s.label for s in default_grid(16384, 8192)]
    assert labels == [
        "none",
        *(f"{m}(factor={s})" for m in ("linear", "ntk", "yarn", "dynamic") for s in (2, 4)),
        "self-extend(group=4)",  # 2048 + 14336 / 4 <= 8192 < 2048 + 14336 / 2
    ]


# ------------------------------------------------------------------------------------ the tiny model
@pytest.fixture(scope="module")
def advised(tiny_model_dir: Path, tmp_path_factory):
    pytest.importorskip("transformers")
    from ropelab.advise import advise

    out = tmp_path_factory.mktemp("advise")
    options = {
        "target": TINY_TARGET,
        "methods": "yarn,linear,self-extend(group=8)",
        "docs": 3,
        "score_last": 32,
        "trials": 1,
        "depths": (0.5,),
        "out": out,
        "progress": False,
    }
    first = advise(str(tiny_model_dir), **options)
    files = sorted(p for p in out.rglob("*.jsonl"))
    before = {p: p.read_text() for p in files}
    again = advise(str(tiny_model_dir), **options)
    return first, again, before, options


def test_ranking_follows_the_losses_with_ties_from_the_paired_intervals(advised) -> None:
    advice, _, _, _ = advised
    rows = advice.rows
    assert rows[0]["label"] == advice.winner
    assert {r["label"] for r in rows} == {
        "none",
        "yarn(factor=4)",
        "linear(factor=4)",
        "self-extend(group=8)",
    }
    assert [r["loss"] for r in rows] == sorted(r["loss"] for r in rows)
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows) and rows[0]["rank"] == 1
    best = rows[0]["loss"]
    for prev, row in itertools.pairwise(rows):
        # the paired difference against the best is this loss minus the best's
        assert row["vs_best"]["difference"] == pytest.approx(row["loss"] - best, abs=1e-9)
        if row["rank"] == prev["rank"]:  # shares the rank: its interval against the head holds 0
            assert not row["vs_head"]["excludes_zero"] and row["tie"] and prev["tie"]
        else:  # a new rank: worse than the previous head, the interval excludes 0
            head = next(r for r in rows if r["label"] == prev["head"])
            assert head["rank"] == prev["rank"] and row["vs_head"] is None
    assert next(r for r in rows if r["label"] == "none")["cost"] is None
    for row in rows:
        if row["label"] != "none":  # the cost inside L0 is paired with none at the trained length
            assert row["cost"]["n"] == 3 and "difference" in row["cost"]
        assert 0.0 <= row["retrieval"]["score"] <= 1.0 and row["retrieval"]["trials"] == 1
    stacks = {r["label"]: r["stacks"] for r in rows}
    assert stacks["self-extend(group=8)"] == "ropelab-only"
    assert stacks["yarn(factor=4)"] == "hf, vllm, llama.cpp"
    text = (advice.out / "advice.md").read_text()
    assert advice.winner in text and "rank" in text and "ropelab-only" in text


def test_the_written_configs_load_back(advised, tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from ropelab import parse_method
    from ropelab.hf import make_extension

    advice, _, _, _ = advised
    written = json.loads((advice.out / "advice.json").read_text())
    assert written["winner"] == advice.winner and written["target"] == TINY_TARGET
    exports = written["exports"]
    for fmt in ("hf", "vllm", "llama.cpp"):
        done = exports[fmt]
        label = advice.winner
        if "refused" in done:  # the winner is ropelab-only (Self-Extend): the best method the stack carries
            assert "ropelab-only" in done["refused"] or "cannot" in done["refused"]
            label, done = done["instead"]["label"], done["instead"]["export"]
        if fmt == "hf":
            config = json.loads((tiny_model_dir / "config.json").read_text())
            (tmp_path / "config.json").write_text(json.dumps({**config, **done}))
            loaded = AutoConfig.from_pretrained(tmp_path)
            assert loaded.max_position_embeddings == done["max_position_embeddings"] >= TINY_TARGET
            # transformers' frequencies from the loaded config are ropelab's for the method on this model
            rope = make_extension(AutoConfig.from_pretrained(tiny_model_dir), parse_method(label)).rope
            kind = loaded.rope_parameters["rope_type"]
            if kind == "default":
                from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

                inv, scaling = LlamaRotaryEmbedding.compute_default_rope_parameters(loaded)
            elif kind == "dynamic":
                inv, scaling = ROPE_INIT_FUNCTIONS[kind](loaded, None, seq_len=TINY_TARGET)
            else:
                inv, scaling = ROPE_INIT_FUNCTIONS[kind](loaded, None)
            mine, my_scaling = rope.frequencies(TINY_TARGET if kind == "dynamic" else None)
            torch.testing.assert_close(inv.float(), mine.float(), rtol=1e-6, atol=0)
            assert float(scaling) == pytest.approx(float(my_scaling), rel=1e-6)
        elif fmt == "vllm":
            assert json.loads(done["args"][1]) == done["hf_overrides"]
        else:
            assert done["command"].startswith("llama-cli") and "--ctx-size" in done["flags"]


def test_a_rerun_computes_nothing(advised) -> None:
    first, again, before, _ = advised
    for path, text in before.items():
        assert path.read_text() == text, path  # no row added to any command's results
    strip = [{k: v for k, v in r.items()} for r in first.rows]
    assert again.rows == strip and again.winner == first.winner


def test_cli_bad_input_is_one_line_and_exit_2(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from ropelab.cli import main

    cases = [
        (["--target", "32"], "trained length 64"),
        (["--target", "64"], "trained length 64"),
        (["--target", "256", "--method", "yarnn"], "did you mean"),
        (["--target", "256", "--score-last", "300"], "--score-last"),
        (["--target", "256", "--docs", "0"], "--docs"),
    ]
    common = ["advise", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--quiet"]
    for extra, message in cases:
        if "--docs" in extra:  # refused by argparse
            with pytest.raises(SystemExit) as stop:
                main([*common, *extra])
            code = stop.value.code
        else:
            code = main([*common, *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "o" / "advice.json").exists()
