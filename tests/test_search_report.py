"""``ropelab report`` renders search folders from their rows alone (ropelab/search/report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ropelab.report import read_jsonl
from ropelab.results import render_results
from ropelab.search import best_by_generation

DOCS = Path(__file__).resolve().parents[1] / "docs" / "search"


def test_best_by_generation_equals_what_the_search_wrote() -> None:
    for folder in ("lab_x4", "lab_x16"):
        rows = list(read_jsonl(DOCS / folder / "results.jsonl"))
        written = json.loads((DOCS / folder / "best.json").read_text())["best_by_generation"]
        assert [list(t) for t in best_by_generation(rows)] == written


def test_report_renders_each_search_with_its_seeds_and_best(tmp_path: Path) -> None:
    rendered = render_results([DOCS / "lab_x4", DOCS / "lab_x16"], out=tmp_path)
    text = rendered.text
    for folder in ("lab_x4", "lab_x16"):
        rows = list(read_jsonl(DOCS / folder / "results.jsonl"))
        best = min(float(r["loss"]) for r in rows)
        assert f"{best:.4f}" in text
        assert f"{len(rows)} evaluations" in text
        for r in rows:
            if r["generation"] == 0 and r["origin"] in ("linear", "ntk", "yarn"):
                assert f"seed {r['origin']}" in text and f"{float(r['loss']):.4f}" in text
    assert "no renderer" not in text
    assert sorted(p.name for p in tmp_path.glob("search_best_*.png")) == [
        "search_best_0.png",
        "search_best_1.png",
    ]
