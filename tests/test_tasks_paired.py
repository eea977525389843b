"""Task scores paired by trial against the baseline (ropelab.tasks.paired, the tasks report): the paired
cells against the exact bootstrap distributions of hand-chosen scores, the task average's definition,
no interval below 3 trials, pairing on the common trials only, `ropelab report` and a run (issue 14)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from ropelab.report.stats import MIN_UNITS
from ropelab.tasks import task_average, task_grid, tasks_table
from ropelab.tasks.paired import AVERAGE, paired_task_scores

# the exact distributions' quantiles are compared with the percentiles of this many resamples
RESAMPLES = 200_000


def row(label: str, length: int, scores: list[float], task: str = "t", depth=0.5, seed=0, **extra) -> dict:
    return {
        "command": "tasks",
        "label": label,
        "model": "tiny",
        "task": task,
        "length": length,
        "depth": depth,
        "seed": seed,
        "trained_length": 1024,
        "metric": "all",
        "scores": {"all": scores},
        **extra,
    }


def exact_distribution(diffs: list[float], weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Every one of the n**n equally likely resamples of n units (ordered index tuples), by hand: the
    weighted mean of the resampled units' differences. Returns the sorted distinct values and their CDF."""
    values = [
        sum(weights[i] * diffs[i] for i in idx) / sum(weights[i] for i in idx)
        for idx in itertools.product(range(len(diffs)), repeat=len(diffs))
    ]
    distinct, counts = np.unique(np.round(values, 12), return_counts=True)
    return distinct, np.cumsum(counts) / len(values)


def exact_quantile(distinct: np.ndarray, cdf: np.ndarray, q: float) -> float:
    """The smallest value whose CDF reaches q. The test needs q far from every CDF step (more than 6
    standard errors of a sample quantile from RESAMPLES draws) for the sample percentile to land on it."""
    margin = 6 * (q * (1 - q) / RESAMPLES) ** 0.5
    assert np.all(np.abs(cdf - q) > margin), "q sits on a CDF step: choose other scores"
    return float(distinct[np.searchsorted(cdf, q)])


def cell(cells, label: str, task: str, length: int):
    (found,) = [c for c in cells if (c.label, c.task, c.length) == (label, task, length)]
    return found


def table_line(text: str, label: str, task: str) -> str:
    """The paired table's line of ``label`` and ``task`` (the score table above it has one too)."""
    paired = text.split("Paired against", 1)[1]
    (line,) = [x for x in paired.splitlines() if x.startswith(f"| {label} ") and f"| {task} " in x]
    return line


# none and yarn on task t at 512 (3 trials) and 1024 (2 trials); trial i is the same prompt for both
HAND = [
    row("none", 512, [0, 0, 0.5]),
    row("yarn", 512, [0.5, 1, 1]),  # differences 0.5, 1, 0.5: mean 2/3
    row("none", 1024, [1, 0]),
    row("yarn", 1024, [1, 1]),  # differences 0, 1: two trials, no interval
]


def test_a_cell_is_the_exact_paired_bootstrap_of_three_trials() -> None:
    """3 trials: 27 equally likely resamples, each of mass 1/27 > 2.5%, so the 95% interval is their
    min and max: mean of (0.5, 0.5, 0.5) = 0.5 and of (1, 1, 1) = 1; it excludes 0."""
    distinct, _ = exact_distribution([0.5, 1, 0.5], [1, 1, 1])
    assert (distinct[0], distinct[-1]) == (0.5, 1.0)
    got = cell(paired_task_scores(HAND), "yarn", "t", 512).paired
    assert got.difference == pytest.approx(2 / 3) and got.n == 3
    assert (got.low, got.high) == (0.5, 1.0) and got.excludes_zero
    line = table_line(tasks_table(HAND), "yarn", "t")
    assert "| +0.667 [+0.500, +1.000] n=3 |" in line and "not different" not in line
    assert "| baseline " in table_line(tasks_table(HAND), "none", "all")


def test_no_interval_below_three_trials() -> None:
    got = cell(paired_task_scores(HAND), "yarn", "t", 1024).paired
    assert MIN_UNITS == 3 and (got.difference, got.n, got.low, got.high) == (0.5, 2, None, None)
    assert "| +0.500 n=2 (n<3) |" in table_line(tasks_table(HAND), "yarn", "t")


def test_an_interval_holding_zero_says_not_different() -> None:
    """Differences 0, 1, 0 (the middle trial only): the resample of trial 0 three times gives 0."""
    rows = [row("none", 512, [1, 0, 1]), row("pi", 512, [1, 1, 1])]
    got = cell(paired_task_scores(rows), "pi", "t", 512).paired
    assert (got.difference, got.low, got.high) == (pytest.approx(1 / 3), 0.0, 1.0) and not got.excludes_zero
    assert "| +0.333 [+0.000, +1.000] n=3 not different |" in table_line(tasks_table(rows), "pi", "t")


def test_four_trials_against_the_exact_distribution() -> None:
    """4 trials over two depths (units (depth, trial)): 256 resamples; the 2.5% and 97.5% quantiles."""
    rows = [
        row("none", 512, [0, 1], depth=0.0),
        row("none", 512, [0, 0.5], depth=1.0),
        row("yarn", 512, [1, 1], depth=0.0),  # differences 1, 0
        row("yarn", 512, [0.5, 1], depth=1.0),  # differences 0.5, 0.5
    ]
    distinct, cdf = exact_distribution([1, 0, 0.5, 0.5], [1] * 4)
    got = cell(paired_task_scores(rows, resamples=RESAMPLES, seed=3), "yarn", "t", 512).paired
    assert got.difference == 0.5 and got.n == 4
    assert got.low == pytest.approx(exact_quantile(distinct, cdf, 0.025), abs=1e-12)
    assert got.high == pytest.approx(exact_quantile(distinct, cdf, 0.975), abs=1e-12)


def test_the_task_average_is_paired_over_task_trial_units() -> None:
    """Task t has 3 trials, task u (no depth) 2: the unit is a (task, depth, trial) prompt, n = 5, each
    of t's weighing 1/3 and u's 1/2, so the difference is exactly the task averages' difference (5/6 and
    1/2: 2/3, where the plain mean of the 5 differences would be 0.7); its interval is the exact bootstrap
    of that weighted mean over the 5**5 resamples of the pooled units."""
    rows = [
        row("none", 512, [0, 0, 0.5]),
        row("yarn", 512, [1, 1, 1]),  # differences 1, 1, 0.5
        row("none", 512, [0.5, 0], task="u", depth=None),
        row("yarn", 512, [1, 0.5], task="u", depth=None),  # differences 0.5, 0.5
    ]
    cells = paired_task_scores(rows, resamples=RESAMPLES, seed=5)
    got = cell(cells, "yarn", AVERAGE, 512).paired
    averages = task_average(rows)
    assert got.n == 5
    assert got.difference == pytest.approx(averages["yarn"][512] - averages["none"][512], abs=1e-12)
    assert got.difference == pytest.approx(2 / 3)
    distinct, cdf = exact_distribution([1, 1, 0.5, 0.5, 0.5], [1 / 3] * 3 + [1 / 2] * 2)
    assert got.low == pytest.approx(exact_quantile(distinct, cdf, 0.025), abs=1e-9)
    assert got.high == pytest.approx(exact_quantile(distinct, cdf, 0.975), abs=1e-9)
    assert "| +0.667 [" in table_line(tasks_table(rows), "yarn", "**average**")


def test_no_paired_average_where_a_task_is_missing() -> None:
    rows = [*HAND, row("none", 512, [1, 1, 1], task="u"), row("yarn", 1024, [1, 1, 1], task="u")]
    cells = paired_task_scores(rows)
    # at 512 yarn has no u; at 1024 none has no u: no average at either, but the t cells stay
    assert not [c for c in cells if c.task == AVERAGE]
    assert cell(cells, "yarn", "u", 1024).paired is None  # none never ran u at 1024
    assert "no common trials" in table_line(tasks_table(rows), "yarn", "u")


def test_different_trial_sets_pair_on_the_common_trials_only() -> None:
    """The baseline ran 4 trials, the method 3 (another --trials): trials 0-2 are the same prompts and
    are paired, trial 3 is not; another seed shares no trial; a prompt hash that differs is not paired."""
    rows = [row("none", 512, [0, 0, 0.5, 1]), row("yarn", 512, [0.5, 1, 1])]
    got = cell(paired_task_scores(rows), "yarn", "t", 512)
    assert (got.paired.n, got.trials, got.baseline_trials) == (3, 3, 4)
    assert got.paired.difference == pytest.approx(2 / 3)
    text = tasks_table(rows)
    assert "- yarn, t at 512: 3 trials paired (yarn ran 3, none 4)" in text

    other_seed = [row("none", 512, [0, 0, 0.5]), row("yarn", 512, [0.5, 1, 1], seed=1)]
    assert cell(paired_task_scores(other_seed), "yarn", "t", 512).paired is None
    assert "| no common trials |" in table_line(tasks_table(other_seed), "yarn", "t")

    hashed = [
        row("none", 512, [0, 0, 0.5], prompt_sha256=["a", "b", "c"]),
        row("yarn", 512, [0.5, 1, 1], prompt_sha256=["a", "X", "c"]),  # trial 1: another prompt
    ]
    got = cell(paired_task_scores(hashed), "yarn", "t", 512).paired
    assert (got.n, got.difference) == (2, 0.5)


def test_no_paired_table_without_the_baseline_or_for_lab_rows() -> None:
    only = [row("yarn", 512, [1, 1, 1]), row("pi", 512, [0, 1, 1])]
    assert paired_task_scores(only) == [] and "Paired against" not in tasks_table(only)
    assert "Paired against" not in tasks_table(HAND, baseline=None)
    pi = cell(paired_task_scores(only, baseline="pi"), "yarn", "t", 512).paired
    assert pi.difference == pytest.approx(1 / 3)


def test_ropelab_report_renders_the_paired_table_from_rows(tmp_path: Path, capsys) -> None:
    from ropelab.cli import main

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HAND))
    assert main(["report", str(folder), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "Paired against none" in out and "+0.667 [+0.500, +1.000] n=3" in out
    assert "+0.667 [+0.500, +1.000] n=3" in (tmp_path / "r" / "report.md").read_text()
    lab = folder.parent / "lab"
    lab.mkdir()  # lab rows: every label another model, its own reference: no baseline to pair against
    (lab / "results.jsonl").write_text("".join(json.dumps({**r, "model": "lab:x"}) + "\n" for r in HAND))
    assert main(["report", str(lab), "--out", str(tmp_path / "r2")]) == 0
    assert "Paired against" not in capsys.readouterr().out


def test_a_run_pairs_every_method_on_the_same_prompts(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = task_grid(
        str(tiny_model_dir),
        methods="none,linear",
        factors=[2],
        tasks="lab-niah",
        lengths=[150],
        depths=[0.0],
        trials=3,
        out=tmp_path / "t",
        progress=False,
        plots=False,
    )
    by_label = {r["label"]: r for r in run.records}
    assert set(by_label) == {"none", "linear(factor=2)"}
    assert by_label["none"]["prompt_sha256"] == by_label["linear(factor=2)"]["prompt_sha256"]
    got = cell(paired_task_scores(run.records), "linear(factor=2)", "lab-niah", 150).paired
    scores = {label: r["score"] for label, r in by_label.items()}
    assert got.n == 3 and got.difference == pytest.approx(scores["linear(factor=2)"] - scores["none"])
    assert "Paired against none" in run.text() and f"{got.text()} |" in run.text()
