"""``benchmarks/run_all.py --only`` updates its scripts' sections of RESULTS.md and keeps the rest."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "run_all", Path(__file__).parents[1] / "benchmarks" / "run_all.py"
)
assert SPEC is not None and SPEC.loader is not None
run_all = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(run_all)

OLD = """# Benchmark results

Machine: full run.

## a.py

old a

## c.py

old c

## gone.py

a script since deleted

## Not in the suite (run separately)

- `x.py`
"""

NEW = """# Benchmark results

Machine: partial run.

## b.py

new b

## c.py

new c

## Not in the suite (run separately)

- `y.py`
"""


def test_merge_replaces_adds_and_keeps() -> None:
    merged = run_all.merge(OLD, NEW, {"a.py", "b.py", "c.py"})
    head, parts = run_all.sections(merged)
    assert head == "# Benchmark results\n\nMachine: full run.\n\n"
    assert list(parts) == ["a.py", "b.py", "c.py", run_all.OTHERS]
    assert "old a" in parts["a.py"] and "new b" in parts["b.py"]
    assert "new c" in parts["c.py"] and "old c" not in merged
    assert "`y.py`" in parts[run_all.OTHERS] and "`x.py`" not in merged
    assert merged.endswith("- `y.py`\n") and "\n\n\n" not in merged
    assert run_all.merge(merged, NEW, {"a.py", "b.py", "c.py"}) == merged  # idempotent
