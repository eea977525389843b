"""The lab job on a tiny budget: report, plots, results; a second run recomputes nothing; resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ropelab.cli import main
from ropelab.lab.checkpoints import read_meta
from ropelab.lab.data import load_corpus
from ropelab.lab.experiment import LabConfig, run_lab
from ropelab.lab.recipe import LAB_ENCODINGS, TrainRecipe, train_model
from ropelab.report import read_jsonl

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
    rope_pi = next(r for r in records if r["key"] == "length/rope/pi/64")
    assert rope_pi["params"]["factor"] == 4.0 and rope_pi["tokens_inside"] == 3 * 16
    assert {r["step"] for r in records if r["experiment"] == "finetune"} == {0, 3, 6}
    assert not list((out / "finetune").glob("*.state.pt"))  # finished runs leave no state behind
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
            "ntk",
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
    assert record["recipe"]["steps"] == 3


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
