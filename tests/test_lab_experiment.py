"""The lab job on a tiny budget: report, plots, results; a second run recomputes nothing; resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from ropelab.cli import build_parser, main
from ropelab.lab.checkpoints import read_meta
from ropelab.lab.data import load_corpus
from ropelab.lab.experiment import LabConfig, run_lab
from ropelab.lab.recipe import LAB_ENCODINGS, TrainRecipe, train_model
from ropelab.lab.report import render_report
from ropelab.report import read_jsonl
from ropelab.report.provenance import SCHEMA, missing_fields

TINY = TrainRecipe(
    length=16, steps=20, batch_size=8, d_model=32, layers=2, heads=2, mlp_ratio=2, warmup=2, max_multiple=4
)
CONFIG = LabConfig(
    multiples=(1, 4),
    eval_windows=3,
    methods=("pi", "dynamic-ntk+log-n"),
    finetune_methods=("none", "pi"),
    finetune_steps=6,
    finetune_eval_every=3,
    finetune_batch_size=2,
    threads=1,
)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    for encoding in LAB_ENCODINGS:
        summary = train_model(TINY.replace(encoding=encoding), out, corpus=corpus, progress=False, threads=1)
        assert summary is not None and not summary["skipped"]
        assert not (out / f"{encoding}.state.pt").exists()
    return out


def _lab(out: Path, checkpoints: Path, corpus, **kw):
    return run_lab(out, CONFIG, checkpoints=checkpoints, recipe=TINY, corpus=corpus, progress=False, **kw)


def _row(records: list[dict], experiment: str, model: str, label: str, length: int) -> dict:
    (row,) = [
        r
        for r in records
        if (r["experiment"], r["model"], r["label"], r["length"]) == (experiment, model, label, length)
    ]
    return row


def _values(path: Path) -> dict[str, dict]:
    return {r["key"]: {k: v for k, v in r.items()} for r in read_jsonl(path)}


def test_train_is_deterministic_and_skips_a_finished_model(tmp_path: Path, checkpoints: Path, corpus) -> None:
    again = train_model(TINY.replace(encoding="rope"), tmp_path, corpus=corpus, progress=False, threads=1)
    assert again is not None
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "rope.safetensors")), load_file(str(checkpoints / "rope.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_meta(tmp_path / "rope.safetensors")["result"]["val_loss"] == again["val_loss"]
    skipped = train_model(TINY.replace(encoding="rope"), tmp_path, corpus=corpus, progress=False, threads=1)
    assert skipped is not None and skipped["skipped"]


def test_lab_writes_everything_and_a_second_run_recomputes_nothing(tmp_path: Path, checkpoints: Path, corpus):
    out = tmp_path / "lab"
    result = _lab(out, checkpoints, corpus)
    outcome = result["outcome"]
    assert outcome.complete and not outcome.units_skipped
    for name in ("report.md", "results.jsonl", "lab_encodings.png", "lab_methods.png", "lab_finetune.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "inside" in report and "sha256" in report and "% 10 == 0" in report
    records = list(read_jsonl(out / "results.jsonl"))
    lengths = {r["length"] for r in records if r["experiment"] == "length"}
    assert lengths == {16, 64}
    rope_pi = _row(records, "length", "rope", "linear", 64)  # asked as "pi": the canonical label
    assert rope_pi["resolved"] == {"factor": 4.0} and rope_pi["tokens_inside"] == 3 * 16
    assert rope_pi["method"] == "linear" and rope_pi["params"] == {} and not rope_pi["log_n"]
    assert _row(records, "context", "rope", "dynamic+log-n", 64)["method"] == "dynamic"
    assert {r["step"] for r in records if r["experiment"] == "finetune"} == {0, 3, 6}
    assert not list((out / "finetune").glob("*.state.pt"))  # finished runs leave no state behind
    # every row says what made it
    for r in records:
        assert not missing_fields(r) and r["command"] == "lab" and r["schema"] == SCHEMA, r
        assert (
            r["model_id"]
            == hashlib.sha256((checkpoints / f"{r['model']}.safetensors").read_bytes()).hexdigest()
        )
        assert r["corpus"]["sha256"] == corpus.digest and r["trained_length"] == 16
        assert (r["dtype"], r["device"], r["threads"]) == ("float32", "cpu", 1)
    steps = [r for r in records if r["experiment"] == "finetune" and r["label"] == "linear"]
    assert {r["resolved"]["factor"] for r in steps} == {4.0}
    assert steps[0]["finetune_settings"]["finetune_batch_size"] == 2
    # the report again from the rows alone, no model: the same tables
    body = render_report(records, tmp_path / "again")
    marker = "## The seed's claims, measured"
    assert body[body.index(marker) :] == report[report.index(marker) :]
    assert body[: body.index(marker)] in report
    assert (tmp_path / "again" / "lab_methods.png").stat().st_size > 0
    lines = (out / "results.jsonl").read_text().count("\n")
    second = _lab(out, checkpoints, corpus)["outcome"]
    assert second.units_run == [] and second.complete
    assert (out / "results.jsonl").read_text().count("\n") == lines
    assert len(second.records) == len(outcome.records)


def test_killed_lab_resumes_to_the_same_numbers(tmp_path: Path, checkpoints: Path, corpus) -> None:
    straight = tmp_path / "straight"
    _lab(straight, checkpoints, corpus)
    resumed = tmp_path / "resumed"
    first = _lab(resumed, checkpoints, corpus, max_units=3)["outcome"]
    assert not first.complete and len(first.units_run) == 3
    assert "Incomplete run" in (resumed / "report.md").read_text()
    # the fine-tuning units stop part-way (a kill mid-run), leaving their resume state
    part = _lab(resumed, checkpoints, corpus, finetune_stop_after=4)["outcome"]
    assert not part.complete and list((resumed / "finetune").glob("*.state.pt"))
    done = _lab(resumed, checkpoints, corpus)["outcome"]
    assert done.complete
    assert not set(done.units_run) & set(first.units_run)
    a, b = _values(straight / "results.jsonl"), _values(resumed / "results.jsonl")
    assert a.keys() == b.keys()
    for key in a:
        for field in ("loss", "loss_inside", "loss_beyond", "loss_last"):
            if a[key].get(field) is None:
                assert b[key].get(field) is None
            else:
                assert a[key][field] == pytest.approx(b[key][field], rel=1e-6, abs=1e-9), (key, field)


def test_cli_lab_and_train(tmp_path: Path, checkpoints: Path, capsys) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "lab",
            "--out",
            str(out),
            "--checkpoints",
            str(checkpoints),
            "--multiples",
            "1,2",
            "--eval-windows",
            "2",
            "--methods",
            "ntk,pi,linear",
            "--finetune-steps",
            "0",
            "--encodings",
            "rope,alibi",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"report: {out / 'report.md'}" in captured.out
    assert "ntk" in captured.out and (out / "lab_methods.png").exists()
    rope = [r for r in read_jsonl(out / "results.jsonl") if r["model"] == "rope"]
    assert {r["label"] for r in rope} == {"none", "ntk", "linear"}  # pi and linear: one method
    code = main(
        [
            "train",
            "--encoding",
            "alibi",
            "--length",
            "16",
            "--steps",
            "3",
            "--d-model",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
            "--mlp-ratio",
            "2",
            "--warmup",
            "1",
            "--out",
            str(tmp_path / "t"),
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "alibi" in captured.out and (tmp_path / "t" / "alibi.safetensors").exists()
    record = json.loads((tmp_path / "t" / "results.jsonl").read_text().splitlines()[-1])
    assert record["recipe"]["steps"] == 3 and not missing_fields(record)
    assert record["command"] == "train" and record["model"] == "alibi" and record["trained_length"] == 16
    assert (
        record["model_id"] == hashlib.sha256((tmp_path / "t" / "alibi.safetensors").read_bytes()).hexdigest()
    )


def test_old_rows_are_recomputed_to_the_same_numbers(tmp_path: Path, checkpoints: Path, corpus) -> None:
    """A results file of an older row layout is not reused: every unit runs again, numbers unchanged."""
    config = LabConfig(multiples=(1, 2), eval_windows=2, methods=("ntk",), finetune_steps=0, threads=1)

    def lab():
        return run_lab(
            tmp_path,
            config,
            checkpoints=checkpoints,
            recipe=TINY,
            corpus=corpus,
            progress=False,
            encodings=("rope",),
        )["outcome"]

    first = lab()
    rows = list(read_jsonl(tmp_path / "results.jsonl"))
    old = [{**r, "schema": SCHEMA - 1} for r in rows]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    again = lab()
    assert again.units_run == first.units_run == ["eval rope none", "eval rope ntk"]
    new = {r["key"]: r for r in again.records}
    assert new.keys() == {r["key"] for r in rows}
    for r in rows:
        assert {k: v for k, v in new[r["key"]].items() if k not in ("time", "unit_seconds")} == {
            k: v for k, v in r.items() if k not in ("time", "unit_seconds")
        }


def test_flag_spellings(tmp_path: Path) -> None:
    """The shared flags, with the lab's old spellings still accepted."""
    parser = build_parser()
    for flag in ("--batch-size", "--finetune-batch-size", "--batch"):
        assert parser.parse_args(["lab", flag, "3"]).batch_size == 3
    assert parser.parse_args(["lab"]).batch_size == LabConfig().finetune_batch_size
    args = parser.parse_args(["train", "--encoding", "rope", "--length", "1k", "--checkpoint-every", "7"])
    assert args.length == 1024 and args.save_every == 7
    assert parser.parse_args(["train", "--encoding", "rope", "--save-every", "5"]).save_every == 5
    assert LabConfig(methods=("pi",)) == LabConfig(methods=("linear",))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["lab", "--methods", "yarm"], "did you mean 'yarn'"),
        (["lab", "--encodings", "ropee"], "did you mean 'rope'"),
        (["lab", "--multiples", "4,2"], "increasing"),
        (["lab", "--checkpoints", "/nonexistent/ckpt"], "no lab checkpoint"),
        (["lab", "--train-steps", "5"], "needs --train"),
        (["train", "--encoding", "rop"], "did you mean 'rope'"),
        (["train", "--encoding", "rope", "--heads", "3"], "multiple of n_heads"),
        (["train", "--encoding", "rope", "--steps", "x"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, argv: list[str], fragment: str) -> None:
    try:
        code = main([*argv, "--out", str(tmp_path / "o")])
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err and err.count("\n") == 1, err


def test_lab_train_trains_first_then_evaluates_and_resumes(tmp_path: Path, corpus) -> None:
    """--train: the evaluation's keys exist only once the model does; a second run does nothing."""
    config = LabConfig(multiples=(1, 2), eval_windows=2, methods=("pi",), finetune_steps=0, threads=1)

    def lab():
        return run_lab(
            tmp_path, config, train=True, recipe=TINY, corpus=corpus, progress=False, encodings=("rope",)
        )["outcome"]

    first = lab()
    assert first.units_run == ["train rope", "eval rope none", "eval rope linear"] and first.complete
    trained = tmp_path / "checkpoints" / "rope.safetensors"
    rows = list(read_jsonl(tmp_path / "results.jsonl"))
    assert rows[0]["experiment"] == "train" and not any(missing_fields(r) for r in rows)
    assert {r["model_id"] for r in rows} == {hashlib.sha256(trained.read_bytes()).hexdigest()}
    again = lab()
    assert again.units_run == [] and len(again.records) == len(first.records)
