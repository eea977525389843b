"""The tasks runner (ropelab.tasks.task_grid), the effective-length verdict, the lab adapter, the
`ropelab tasks` command and its report, on the tiny saved model (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ropelab.errors import RopeConfigError
from ropelab.report import read_jsonl
from ropelab.report.provenance import ROW_FIELDS
from ropelab.tasks import TASKS, Frame, Measure, effective_lengths, task_grid
from ropelab.tasks.grid import cell_samples, run_cell
from ropelab.tasks.text import default_haystack, frame_for, token_counter

OPTIONS = {"tasks": "lab-niah,lab-vt", "lengths": [200], "depths": [0.5], "trials": 2, "progress": False}


def test_task_grid_stamps_every_trial_resumes_and_recomputes_a_change(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "tasks"
    run = task_grid(str(tiny_model_dir), out=out, plots=True, threshold=0.0, **OPTIONS)
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 2 and [r["task"] for r in rows] == ["lab-niah", "lab-vt"]
    for r in rows:
        assert set(ROW_FIELDS) <= set(r) and r["command"] == "tasks" and r["frame"] == "plain"
        assert len(r["predictions"]) == len(r["answers"]) == len(r["scores"]["all"]) == 2
        assert min(r["prompt_tokens"]) >= 200 - 4 and max(r["prompt_tokens"]) <= 200
        assert r["score"] == sum(r["scores"]["all"]) / 2 and "text" in r["prompt"]
        assert all(a in r["prompt"]["text"] for a in r["answers"][0])
    assert rows[0]["prefix_groups"] == 1  # the trials of a cell share the prefix's cache
    assert [p.name for p in run.plots] == ["tasks_score.png", "tasks_none.png"]
    assert "none: effective context length >= 200" in run.text()

    def nothing(*args, **kwargs):
        raise AssertionError("a done cell was computed again")

    monkeypatch.setattr("ropelab.tasks.grid.run_cell", nothing)
    again = task_grid(str(tiny_model_dir), out=out, plots=False, **OPTIONS)
    assert again.records == run.records and len(list(read_jsonl(out / "results.jsonl"))) == 2
    monkeypatch.undo()
    task_grid(str(tiny_model_dir), out=out, plots=False, **{**OPTIONS, "tasks": "lab-niah", "trials": 3})
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 3 and rows[-1]["trials"] == 3


def test_the_shared_prefix_cache_gives_the_answers_of_a_fresh_decode(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ropelab.evaluate import greedy_continue_batch

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    frame = Frame()
    samples = cell_samples(
        TASKS["lab-niah"], Measure(token_counter(tok), frame), default_haystack(), 200, 0.5, 3, 1
    )
    cell = run_cell(model, tok, samples, frame, 4, batch_size=2)
    for s, pred in zip(samples, cell["predictions"], strict=True):
        a, b = Measure(len, frame).parts(s.prefix, s.rest, s.answer_prefix)
        ids = tok(a, add_special_tokens=False)["input_ids"] + tok(b, add_special_tokens=False)["input_ids"]
        fresh = greedy_continue_batch(model, None, 0, [ids], 4)[0]
        assert tok.decode(fresh) == pred


def test_effective_length_against_a_hand_computed_example() -> None:
    def row(label: str, length: int, scores: list[float], task: str = "t") -> dict:
        return {
            "label": label,
            "task": task,
            "length": length,
            "depth": 0.5,
            "trained_length": 1024,
            "scores": {"all": scores},
            "metric": "all",
        }

    rows = [
        row("none", 512, [1, 1, 0.5, 0.5]),  # 0.75
        row("none", 1024, [1, 0.5, 0.5, 1]),  # 0.75: the threshold (none at the trained length)
        row("none", 2048, [0, 0.5, 0.5, 0]),  # 0.25
        row("yarn", 512, [1, 1, 1, 1]),
        row("yarn", 1024, [1, 1, 0.5, 0.5]),  # 0.75: at the threshold counts
        row("yarn", 2048, [1, 1, 1, 0]),  # 0.75
        row("pi", 512, [0, 0, 0, 1]),  # below at the shortest length
        row("pi", 1024, [1, 1, 1, 1]),
    ]
    failed = {**row("pi", 2048, []), "scores": None, "error": "a learned table asked past its last row"}
    verdicts, note = effective_lengths([*rows, failed])  # a length the model could not run: no scores
    got = {v.label: v.effective_length for v in verdicts}
    assert got == {"none": 1024, "yarn": 2048, "pi": None} and not note
    assert verdicts[0].threshold == 0.75 and "trained length 1024" in verdicts[0].basis
    assert ">= 2048 (the longest length tested)" in verdicts[1].line()
    two_tasks = [*rows[:3], row("none", 512, [0, 0, 0, 0], "u"), row("none", 1024, [1, 1, 1, 1], "u")]
    averages = {v.label: v.scores for v in effective_lengths(two_tasks, threshold=0.5)[0]}
    assert averages == {"none": {512: 0.375, 1024: 0.875}}  # 2048 lacks task u: no average there
    assert effective_lengths(rows[3:], threshold=None)[1].startswith("yarn: no effective length")
    zero = [row("none", 512, [0, 0]), row("none", 1024, [0, 0])]  # the model cannot do the task at all
    verdicts, note = effective_lengths(zero)
    assert not verdicts and "scores 0 at 1024" in note


def test_a_chat_template_frames_the_prompt(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert frame_for(tok).kind == "plain"
    tok.chat_template = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>"
    frame = frame_for(tok)
    assert (frame.kind, frame.head, frame.mid) == ("chat", "<u>", "</u><a>")
    assert frame_for(tok, chat=False).kind == "plain"
    s = TASKS["niah-single"].generate(Measure(token_counter(tok), frame), 600, 0.5, 0)
    assert s.frame == "chat" and s.tokens <= 600


def test_lab_models_run_the_byte_tasks(tmp_path: Path) -> None:
    from ropelab.lab import PACKAGE_CHECKPOINTS
    from ropelab.tasks.lab import greedy_bytes, lab_task_grid

    threads = torch.get_num_threads()
    try:
        run = lab_task_grid(
            [PACKAGE_CHECKPOINTS / "rope.safetensors"],
            multiples=(1,),
            depths=(0.5,),
            trials=2,
            out=tmp_path / "lab",
            threads=1,
            progress=False,
            plots=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert [(r["label"], r["task"], r["length"]) for r in run.records] == [
        ("rope", t, 128) for t in ("lab-niah", "lab-vt")
    ]
    assert all(max(r["prompt_tokens"]) <= r["length"] and len(r["predictions"]) == 2 for r in run.records)
    # its own reference: a verdict against rope at 128, or none where rope scores 0 there
    assert "rope scores 0 at 128" in run.note or run.verdicts[0].basis.startswith(
        "the model's own score (rope)"
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(256, 8), torch.nn.Linear(8, 256))
    assert len(greedy_bytes(model, b"abc", 3)) == 3


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--tasks", "niah-singel"], "did you mean 'niah-single'"),
        (["--tasks", ","], "no task given"),
        (["--threshold", "2"], "--threshold: must lie in [0, 1]"),
        (["--depths", "2"], "depths must lie in [0, 1]"),
        (["--lengths", "100", "--tasks", "niah-multiquery"], "shorter than its fixed text"),
    ],
)
def test_tasks_command_refuses_bad_input_in_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys, argv, expect
):
    from ropelab.cli import main

    try:
        code = main(["tasks", "--model", str(tiny_model_dir), "--quiet", "--out", str(tmp_path / "o"), *argv])
    except SystemExit as exit:  # argparse's one-line usage error
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and expect in err and err.count("\n") == 1, err


def test_tasks_command_and_its_report(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from ropelab.cli import main

    out = tmp_path / "t"
    argv = [
        "tasks",
        "--model",
        str(tiny_model_dir),
        "--tasks",
        "lab-niah",
        "--lengths",
        "150",
        "--depths",
        "0",
        "--trials",
        "1",
        "--threshold",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "none: effective context length" in capsys.readouterr().out
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "long-context tasks" in text and "| none   | lab-niah" in text
    assert (tmp_path / "r" / "tasks_score.png").exists()
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    with pytest.raises(RopeConfigError, match="trials must be"):
        task_grid(str(tiny_model_dir), trials=0)
    assert row["frame"] == "plain"
