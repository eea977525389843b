"""eval's statistics on the tiny model: bits per byte, paired differences against a baseline, n beside
every interval, and LongPPL's key tokens (ropelab.evaluate.key_tokens)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer

from ropelab import RopeConfigError
from ropelab.cli import main
from ropelab.evaluate import (
    KeyTokenRule,
    eval_ci_tables,
    eval_paired_tables,
    evaluate_methods,
    find_key_tokens,
    key_token_mask,
)
from ropelab.evaluate.nll import token_nll
from ropelab.evaluate.perplexity import target_bytes
from ropelab.evaluate.sweep import token_sha256
from ropelab.report import read_jsonl
from ropelab.report.stats import paired_bootstrap


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for i, name in enumerate(("a.txt", "b.txt", "c.txt", "d.txt")):
        words = " ".join(
            f"word{(j * (i + 2)) % 17} café" if j % 5 == 0 else f"w{j % (i + 3)}" for j in range(200)
        )
        (folder / name).write_text(f"document {name}: {words}")
    return folder


def _eval(model: Path, corpus: Path, out: Path, **kwargs):
    options = {"methods": "none,yarn", "factors": [2], "lengths": [32, 64], "docs": 3}
    return evaluate_methods(
        str(model), corpus=str(corpus), out=out, progress=False, plots=False, **{**options, **kwargs}
    )


# ---------------------------------------------------------------------------------- key tokens
def test_key_token_criterion_by_hand() -> None:
    """LongPPL: short - long > gain and long < max_loss, both strict; no short context (NaN) is never key."""
    long = torch.tensor([0.5, 1.9, 2.5, 0.1, 1.0, 0.3])
    short = torch.tensor([3.0, 3.0, 5.0, 2.0, 3.0, math.nan])
    # gains:              2.5  1.1  2.5  1.9  2.0  nan
    mask = key_token_mask(long, short)  # the paper's alpha = 2, beta = -2
    assert mask.tolist() == [True, False, False, False, False, False]
    assert key_token_mask(long, short, gain=1.0, max_loss=3.0).tolist() == [
        True,
        True,
        True,
        True,
        True,
        False,
    ]


def test_find_key_tokens_selects_exactly_the_tokens_meeting_the_criterion(tiny) -> None:
    """Each target's short window recomputed one target at a time (window start: the block's, module doc):
    the tokens selected are exactly those whose NLL gain beats the threshold and whose long NLL is low."""
    model, _ = tiny
    ids = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(5))
    rule = KeyTokenRule(short=12, block=6, gain=0.05, max_loss=6.0)
    found = find_key_tokens(model, ids, rule)
    long = token_nll(model, ids)[0]
    expected, candidates = [], 0
    for t in range(1, 40):  # target ids[0, t], NLL index t - 1
        start = ((t - 12) // 6) * 6 if t >= 12 else 0
        if start == 0:  # the first block's window is the whole prefix
            assert math.isnan(found.short_nll[0, t - 1])
            continue
        candidates += 1
        short = float(token_nll(model, ids[:, start : t + 1])[0, -1])
        assert float(found.short_nll[0, t - 1]) == pytest.approx(short, abs=1e-5)
        if short - float(long[t - 1]) > 0.05 and float(long[t - 1]) < 6.0:
            expected.append(t - 1)
    assert candidates == 40 - 18 and found.positions() == expected and 0 < len(expected) < candidates
    torch.testing.assert_close(found.long_nll[0], long)


def test_key_tokens_in_eval_are_the_baselines_and_give_every_method_the_same_tokens(
    tiny, tiny_model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    model, tok = tiny
    rule = KeyTokenRule(short=16, block=8, gain=0.05, max_loss=6.0)
    run = _eval(tiny_model_dir, corpus, tmp_path / "out", key_tokens=rule)
    keyed = [json.loads(line) for line in (tmp_path / "out" / "key_tokens.jsonl").read_text().splitlines()]
    assert [r["doc"] for r in keyed] == ["a.txt", "b.txt", "c.txt"] and {r["label"] for r in keyed} == {
        "none"
    }
    units = list(read_jsonl(tmp_path / "out" / "doc_results.jsonl"))
    for row in keyed:  # the stored positions are find_key_tokens' on the document, by the unmodified model
        text = (corpus / row["doc"]).read_text()
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"][:64]])
        assert token_sha256(ids) == row["tokens_sha256"]
        found = find_key_tokens(model, ids, rule)
        assert row["positions"] == found.positions() and row["count"] == len(row["positions"])
        # the baseline's key cell is its long NLL over those tokens, below max_loss; a method that sees
        # only the short windows would lose more than the gain threshold on each of them
        mine = next(u for u in units if u["doc"] == row["doc"] and u["label"] == "none")
        key = found.long_nll[0][found.mask[0]]
        assert mine["cells"]["key:64"]["nll"] == pytest.approx(float(key.double().sum()), rel=1e-5)
        assert mine["cells"]["key:64"]["tokens"] == len(row["positions"]) > 0
        assert (found.short_nll[0][found.mask[0]] - key > rule.gain).all() and (key < rule.max_loss).all()
        # every method is scored on the same tokens
        assert {u["cells"]["key:64"]["tokens"] for u in units if u["doc"] == row["doc"]} == {row["count"]}
    key_rows = [r for r in run.records if r["metric"] == "key"]
    assert {r["label"] for r in key_rows} == {"none", "yarn(factor=2)"}
    assert "key" in run.tables and "tok" in run.tables["key"]
    assert "key-token loss" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(RopeConfigError, match="prefix"):
        _eval(tiny_model_dir, corpus, tmp_path / "x", key_tokens=16, score_last=8)


# ------------------------------------------------------------------------ bits per byte, paired
def test_rows_count_the_bytes_they_predict(tiny, tiny_model_dir: Path, corpus: Path, tmp_path: Path) -> None:
    _, tok = tiny
    run = _eval(tiny_model_dir, corpus, tmp_path / "out", methods="none")
    units = list(read_jsonl(tmp_path / "out" / "doc_results.jsonl"))
    for unit in units:
        ids = tok((corpus / unit["doc"]).read_text(), add_special_tokens=False)["input_ids"][:64]
        cells = unit["cells"]
        assert cells["prefix:64"]["bytes"] == target_bytes(tok, ids[1:64])
        assert cells["band:64"]["bytes"] == len(tok.decode(ids[32:64]).encode("utf-8"))
    for row in run.records:
        assert row["bytes"] == sum(u["cells"][f"{row['metric']}:{row['length']}"]["bytes"] for u in units)
        assert row["bpb"] == pytest.approx(row["loss"] * row["tokens"] / (math.log(2) * row["bytes"]))
    assert " bpb" in run.tables["prefix"]


def test_a_unit_row_without_bytes_is_computed_again(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = _eval(tiny_model_dir, corpus, out, methods="none", docs=1)
    for name in ("doc_results.jsonl", "results.jsonl"):  # the layout before bits per byte
        rows = list(read_jsonl(out / name))
        for r in rows:
            r.pop("bytes", None)
            r.pop("bpb", None)
            for cell in (r.get("cells") or {}).values():
                cell.pop("bytes")
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = _eval(tiny_model_dir, corpus, out, methods="none", docs=1)
    assert len(list(read_jsonl(out / "doc_results.jsonl"))) == 2  # computed again, not reused
    assert all(r["bpb"] is not None for r in again.records)
    assert [r["loss"] for r in again.records] == pytest.approx([r["loss"] for r in first.records])


def test_methods_are_paired_by_document_against_the_baseline(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = _eval(tiny_model_dir, corpus, out)
    units = list(read_jsonl(out / "doc_results.jsonl"))
    for row in run.records:
        if row["label"] == "none":
            assert row["paired"] is None and row["settings"]["baseline"] == "none"
            continue
        cell = f"{row['metric']}:{row['length']}"
        mine = [u["cells"][cell] for u in units if u["label"] == row["label"]]
        base = [u["cells"][cell] for u in units if u["label"] == "none"]
        want = paired_bootstrap(
            [c["nll"] for c in mine],
            [c["tokens"] for c in mine],
            [c["nll"] for c in base],
            [c["tokens"] for c in base],
        )
        assert row["paired"] == {"baseline": "none", **want.to_dict()}
        assert row["paired"]["difference"] == pytest.approx(
            row["loss"]
            - next(
                r["loss"]
                for r in run.records
                if r["label"] == "none" and r["metric"] == row["metric"] and r["length"] == row["length"]
            )
        )
    paired = eval_paired_tables(run.records)
    assert set(paired) == {"prefix", "band"}
    assert "| none " in paired["prefix"] and "baseline" in paired["prefix"] and "n=3" in paired["prefix"]
    assert "n=3" in eval_ci_tables(run.records)["prefix"]
    assert "Paired against none" in run.text() and "Paired against none" in (out / "report.md").read_text()


def test_below_three_documents_there_is_no_interval(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    run = _eval(tiny_model_dir, corpus, tmp_path / "out", docs=2)
    assert all(r["ci_low"] is None and r["ci_high"] is None for r in run.records)
    assert all(r["paired"] is None or r["paired"]["low"] is None for r in run.records)
    ci, paired = eval_ci_tables(run.records)["prefix"], eval_paired_tables(run.records)["prefix"]
    assert "n=2 (n<3)" in ci and "[" not in ci and "n=2 (n<3)" in paired


def test_baseline_flag_runs_the_baseline_first(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path, capsys
) -> None:
    args = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--corpus",
        str(corpus),
        "--lengths",
        "32,64",
        "--docs",
        "3",
    ]
    out = tmp_path / "out"
    assert (
        main([*args, "--method", "yarn", "--baseline", "linear(factor=2)", "--out", str(out), "--quiet"]) == 0
    )
    printed = capsys.readouterr().out
    assert "Paired against linear(factor=2)" in printed
    rows = list(read_jsonl(out / "results.jsonl"))
    assert [r["label"] for r in rows][:1] == ["linear(factor=2)"]
    assert {r["paired"]["baseline"] for r in rows if r["paired"]} == {"linear(factor=2)"}
    assert main([*args, "--method", "yarn", "--baseline", "yarn", "--factor", "2,4", "--out", str(out)]) == 2
    assert "--baseline must name one method" in capsys.readouterr().err
