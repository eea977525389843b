"""`ropelab report`: tables, report.md and plots re-drawn from results files without a model (issue 12).

The README's SmolLM2 tables are what `ropelab report docs/smollm2` renders from the committed rows (written
in the older row layout), byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ropelab.cli import main
from ropelab.evaluate import RENDERERS, eval_tables, passkey_table, read_results, render_results

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "smollm2"


def test_the_readme_tables_are_rendered_from_the_committed_results() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = read_results([DOCS])
    tables = eval_tables(r for r in rows if r.get("command") == "eval")
    assert set(tables) == {"prefix", "band", "last"}
    pk = passkey_table(r for r in rows if r.get("command") == "passkey")
    assert "0/2 (no number answered)" in pk
    for name, table in [*tables.items(), ("passkey", pk)]:
        assert table in readme, f"the {name} table rendered from docs/smollm2 is not in README.md:\n{table}"
    # and the command prints each of them
    rendered = render_results([DOCS])
    assert all(t in rendered.text for t in [*tables.values(), pk]) and rendered.files == []


def test_report_command_writes_report_and_plots_without_a_model(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["report", str(DOCS), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| self-extend(group=4,window=1024) | 2.296 (9.9)  |" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "eval_band.png",
        "eval_last.png",
        "eval_prefix.png",
        "passkey_none.png",
        "passkey_yarn(factor=2).png",
        "report.md",
    ]
    assert "| none           | 2/2  | 2/2  | 0/2 (no number answered) |" in (out / "report.md").read_text()


def _copy(rows: list[dict], folder: Path, **changes) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps({**r, **changes}) + "\n" for r in rows))
    return folder


def test_several_runs_side_by_side_and_shared_labels_told_apart(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (DOCS / "passkey_results.jsonl").read_text().splitlines()]
    a = _copy(rows, tmp_path / "run-a")
    b = _copy([r for r in rows if r["method"] == "none"], tmp_path / "run-b", answers=[1, 2])
    table = render_results([a, b]).sections[0].text
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines] == [
        "method",
        "none (run-a)",
        "yarn(factor=2)",  # one run only: its label as is
        "none (run-b)",
    ]
    assert "0/2 (no number answered)" in lines[1]
    assert lines[3].count("0/2") == 3 and "no number" not in lines[3]  # run-b answered, wrongly
    # one folder holding two runs of the same label (another dtype): told apart by what differs
    stamped = [{**r, "dtype": "float32"} for r in rows[:3]] + [{**r, "dtype": "bfloat16"} for r in rows[:3]]
    both = render_results([_copy(stamped, tmp_path / "run-c")]).sections[0].text
    assert "| none (dtype=float32)" in both and "| none (dtype=bfloat16)" in both


def test_commands_without_a_renderer_get_a_note(tmp_path: Path) -> None:
    rows = [{"command": "lab", "encoding": "rope", "loss": 1.0}, {"no": "command"}]
    rows += [json.loads((DOCS / "passkey_results.jsonl").read_text().splitlines()[0])]
    rendered = render_results([_copy(rows, tmp_path / "mixed")])
    assert "lab" not in RENDERERS
    assert rendered.notes == [
        "1 rows of command 'lab': no renderer for it here (skipped)",
        "1 rows of command '?': no renderer for it here (skipped)",
    ]
    assert "| none   | 2/2  |" in rendered.text


def test_a_fresh_run_re_renders_to_its_own_tables(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from ropelab.evaluate import evaluate_methods

    run = evaluate_methods(
        str(tiny_model_dir),
        methods="none,ntk",
        factors=[2],
        lengths=[32, 64],
        docs=1,
        out=tmp_path / "run",
        progress=False,
        plots=False,
    )
    again = render_results([tmp_path / "run"]).text
    assert all(table in again for table in run.tables.values())


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["report", "/no/such/folder"], "no such results file or folder"),
        (["report", "."], "holds no results.jsonl"),
    ],
)
def test_bad_report_input_is_one_line(tmp_path: Path, monkeypatch, capsys, argv, fragment) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_eval_help_prints_a_plain_percent(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "95% intervals" in out and "%%" not in out


def test_runs_with_other_settings_in_one_folder_are_not_merged(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (DOCS / "passkey_results.jsonl").read_text().splitlines()][:3]
    fewer = [{**r, "trials": 1, "keys": r["keys"][:1], "answers": r["answers"][:1]} for r in rows]
    text = render_results([_copy(rows + fewer, tmp_path / "run-d")]).sections[0].text
    assert "| none (trials=2) | 2/2  | 2/2  | 0/2 (no number answered) |" in text
    assert "| none (trials=1) | 1/1  | 1/1  | 0/1 (no number answered) |" in text


def _tables(text: str) -> list[str]:
    """The Markdown tables of ``text`` (runs of lines starting with '|')."""
    out, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            out.append("\n".join(block))
            block = []
    return out


def test_the_readme_lab_and_finetune_tables_are_rendered_from_the_committed_results() -> None:
    """`ropelab report docs/lab` and `docs/finetune`: the README's lab table (encodings) and fine-tuning
    table are what the renderers print from the committed rows, byte for byte."""
    from ropelab.results import render_results

    readme = (ROOT / "README.md").read_text()
    lab = render_results([ROOT / "docs" / "lab"]).text
    encodings = lab.split("## Encodings, trained short, tested long", 1)[1]
    assert _tables(encodings)[0] in readme
    finetune = _tables(render_results([ROOT / "docs" / "finetune"]).text)
    assert len(finetune) == 1 and finetune[0] in readme


def test_the_readme_context_tables_are_rendered_from_the_committed_results() -> None:
    """`ropelab report docs/smollm2-context/code` and `.../english` (issue 13's 32k measurement): the
    README's two same-tokens tables are what the renderer prints from the committed rows, byte for byte,
    with all eight methods at 4k-32k."""
    readme = (ROOT / "README.md").read_text()
    for corpus in ("code", "english"):
        rows = [
            r
            for r in read_results([ROOT / "docs" / "smollm2-context" / corpus])
            if r.get("command") == "eval"
        ]
        assert len({r["label"] for r in rows}) == 8
        table = eval_tables(rows)["last"]
        assert "| 32768 " in table.splitlines()[0]
        assert table in readme, f"the {corpus} table rendered from docs/smollm2-context is not in README.md"
