"""ropelab.evaluate.run_cells in one process: resume by key, rows in cell order, the method switched only
where it changes and restored at the end (the torchrun split is covered by the passkey/tasks gloo tests)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import pytest

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM

import ropelab.evaluate.shard as shard
from ropelab.evaluate import done_rows, run_cells
from ropelab.hf import Extension, make_extension
from ropelab.registry import MethodSpec, parse_methods
from ropelab.report.provenance import resume_key, stamp, table_context
from ropelab.train.distributed import Dist

logging.getLogger("transformers").setLevel(logging.ERROR)


class _Cell(NamedTuple):
    spec: MethodSpec
    length: int
    key: str


def test_run_cells_resumes_by_key_keeps_cell_order_and_switches_methods_once(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    specs = parse_methods("none,linear(factor=2)")
    extensions = {s.label: make_extension(model.config, s) for s in specs}
    context = table_context(command="unit")  # a run context with no model fields: enough for keys
    cells = [_Cell(s, n, resume_key(context, s, length=n)) for s in specs for n in (16, 32, 64)]
    result_file = tmp_path / "results.jsonl"
    computed: list[tuple[str, int]] = []

    def compute(cell: _Cell, ext: Extension) -> dict[str, Any]:
        running = model.__dict__.get("ropelab_extension")  # None: the model's own RoPE (method none)
        assert running is (None if ext.name == "none" else ext)  # the model runs the cell's method
        computed.append((cell.spec.label, cell.length))
        return stamp(context, cell.spec, ext.resolved(), key=cell.key, length=cell.length)

    switches: list[str] = []
    real_extend = shard.extend

    def counted_extend(m: Any, method: Any) -> Any:
        switches.append(method if isinstance(method, str) else method.name)
        return real_extend(m, method)

    monkeypatch.setattr(shard, "extend", counted_extend)
    options = dict(model=model, extensions=extensions, command="unit", progress=False, postfix=str)

    first = run_cells(cells[:2], compute, result_file, Dist(), **options)
    assert computed == [("none", 16), ("none", 32)]
    assert [r["key"] for r in first] == [c.key for c in cells[:2]]
    assert switches == ["none", "none"]  # once for the method, once back to none
    # a row of another command with the key of (linear, 16), and one of an older layout with (none, 64):
    # neither is reused
    with result_file.open("a") as f:
        f.write(json.dumps({**first[0], "command": "other", "key": cells[3].key}) + "\n")
        f.write(json.dumps({**first[0], "schema": -1, "key": cells[2].key}) + "\n")
    assert set(done_rows(result_file, "unit")) == {c.key for c in cells[:2]}

    computed.clear()
    switches.clear()
    rows = run_cells(cells, compute, result_file, Dist(), **options)
    assert computed == [(c.spec.label, c.length) for c in cells[2:]]  # the done keys are skipped
    assert [r["key"] for r in rows] == [c.key for c in cells]  # in cell order, reused rows included
    assert rows[:2] == first  # reused as written
    assert [(r["label"], r["length"]) for r in rows] == [(c.spec.label, c.length) for c in cells]
    assert switches == ["none", "linear", "none"]  # switched where the method changes, restored at the end
    assert "ropelab_extension" not in model.__dict__

    computed.clear()
    assert run_cells(cells, compute, result_file, Dist(), **options) == rows  # all done: nothing computed
    assert computed == []
