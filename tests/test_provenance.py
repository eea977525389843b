"""Results that say what made them: row fields and the resume key."""

from __future__ import annotations

import pytest

from ropelab.registry import parse_method
from ropelab.report.provenance import (
    ROW_FIELDS,
    SCHEMA,
    corpus_identity,
    is_current,
    missing_fields,
    resume_key,
    run_context,
    stamp,
)


def _context(**changes: object) -> dict:
    base = dict(
        command="eval",
        model="smollm2",
        model_id="abc",
        trained_length=8192,
        dtype="torch.float32",
        device="cpu",
        corpus=corpus_identity("stdlib", ["a", "b"]),
        threads=2,
    )
    return run_context(**{**base, **changes})


def test_a_stamped_row_has_every_field() -> None:
    spec = parse_method("self-extend")
    row = stamp(_context(), spec, {"window": 2048, "group": 4}, loss=1.5)
    assert missing_fields(row) == [] and is_current(row)
    assert row["schema"] == SCHEMA and row["dtype"] == "float32" and row["resolved"]["window"] == 2048
    assert set(ROW_FIELDS) <= set(row) and row["loss"] == 1.5
    old = {k: v for k, v in row.items() if k != "versions"}
    assert missing_fields(old) == ["versions"] and not is_current(old)


def test_the_resume_key_covers_what_changes_a_number_and_only_that() -> None:
    spec = parse_method("yarn(factor=2)")
    key = resume_key(_context(), spec, length=4096)
    assert key == resume_key(_context(threads=7), spec, length=4096)  # threads: recorded, not keyed
    for change in (
        {"dtype": "bfloat16"},
        {"device": "cuda"},
        {"model_id": "def"},
        {"trained_length": 4096},
        {"corpus": corpus_identity("stdlib", ["a", "c"])},
    ):
        assert resume_key(_context(**change), spec, length=4096) != key, change
    assert resume_key(_context(), parse_method("yarn(factor=4)"), length=4096) != key
    assert resume_key(_context(), parse_method("yarn(factor=2)+log-n"), length=4096) != key
    assert resume_key(_context(), spec, length=8192) != key
    newer = _context()
    newer["versions"] = {**newer["versions"], "torch": "99.0"}
    assert resume_key(newer, spec, length=4096) != key


def test_corpus_identity_separates_parts() -> None:
    assert corpus_identity("x", ["ab", "c"]) != corpus_identity("x", ["a", "bc"])


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "--method", "yarn", "--factor", "4", "--original-max-position-embeddings", "2048"],
        ["export", "--method", "pi", "--factor", "2", "--original-max-position-embeddings", "2048"],
        ["check", "--preset", "llama-3.1-8b"],
        ["presets"],
        ["presets", "--show", "llama-3.1-8b"],
    ],
)
def test_the_table_commands_rows_say_what_made_them(argv: list[str], tmp_path, capsys) -> None:
    """Commands with no model (inspect, export, check, presets) stamp their rows too."""
    from ropelab.cli import main
    from ropelab.report import read_jsonl

    assert main([*argv, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    rows = list(read_jsonl(tmp_path / "results.jsonl"))
    assert rows and all(missing_fields(r) == [] and r["schema"] == SCHEMA for r in rows)
    assert all(r["command"] == argv[0] for r in rows)
    if argv[0] in ("inspect", "export"):
        assert rows[0]["label"] == ("yarn(factor=4)" if argv[0] == "inspect" else "linear(factor=2)")
