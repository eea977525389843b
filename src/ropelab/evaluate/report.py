"""Tables, report and plots of ``eval`` and ``passkey`` rows, from a run or from results files.

Rendering reads rows; it loads no model. It reads both the rows of this version
(:mod:`ropelab.report.provenance`: ``label`` is the method's text, ``settings`` the plan) and rows of the
older layout, such as the committed ``docs/smollm2/*results.jsonl`` (``method`` holds the label, ``plan``
the settings): reading old rows to draw them is not reusing them (resume never does).

Rows of several runs go side by side: one table with every run's methods. A *series* is the rows of one
method label in one run (the same folder, model, dtype, device, corpus and settings); when two series in
one table share a label, each label gets what tells them apart, the folder name first
(``none (runs-a)``, ``none (dtype=bfloat16)``).

:func:`render_results` (what ``ropelab report`` calls) reads results files, groups the rows by
``command`` and hands each group to its entry of :data:`RENDERERS`; a command without one gets a line
saying so.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.report import format_table, read_jsonl
from ropelab.report.stats import MIN_UNITS, PairedDifference

Row = Mapping[str, Any]

#: the metric's title in tables and the report (``{stride}``, ``{score_last}`` from the settings)
METRIC_TITLES = {
    "prefix": "mean loss over the first L tokens",
    "band": "mean loss over the band (prev L, L]",
    "sliding": "sliding windows of L tokens, stride {stride}",
    "last": "loss on the same last {score_last} tokens given L tokens of context",
    "key": "key-token loss over the first L tokens (LongPPL key tokens: found by {identifier}, "
    "short window {short})",
}
#: the row field a results file names the folder it was read from by (never written to a file)
SOURCE = "_source"


# ------------------------------------------------------------------------------- series
def label_of(row: Row) -> str:
    """The method's text: ``label`` (this version) or ``method`` (older rows, where it held the label)."""
    return str(row.get("label") or row.get("method") or "?")


def model_of(row: Row) -> str:
    """The model as named (older eval rows kept it in ``plan``)."""
    return str(row.get("model") or settings_of(row).get("model") or "?")


def corpus_of(row: Row) -> str:
    """The corpus as named (``corpus.name``; older eval rows kept it in ``plan``)."""
    corpus = row.get("corpus")
    name = corpus.get("name") if isinstance(corpus, Mapping) else corpus
    return str(name or settings_of(row).get("corpus") or "?")


def settings_of(row: Row) -> dict[str, Any]:
    """The run's settings: ``settings`` (this version) or the older rows' ``plan``."""
    return dict(row.get("settings") or row.get("plan") or {})


def _identity(row: Row) -> dict[str, str]:
    """What tells two runs of the same label apart, flat, as short text (``folder`` first): where the
    rows were read, what made them (model, dtype, device, corpus, versions) and the run's settings."""
    corpus = row.get("corpus")
    if isinstance(corpus, Mapping):
        corpus = f"{corpus.get('name')}@{str(corpus.get('sha256', ''))[:8]}"
    out = {
        "folder": str(row.get(SOURCE) or ""),
        "model": model_of(row),
        "model_id": str(row.get("model_id") or "")[:8],
        "dtype": str(row.get("dtype") or ""),
        "device": str(row.get("device") or ""),
        "corpus": str(corpus or settings_of(row).get("corpus") or ""),
        "versions": ",".join(f"{k}={v}" for k, v in sorted((row.get("versions") or {}).items())),
    }
    settings = {**settings_of(row), **{k: row[k] for k in ("trials", "seed", "new_tokens") if k in row}}
    for key, value in sorted(settings.items()):
        if key not in ("model", "corpus", "model_fingerprint"):
            out[key] = json.dumps(value)
    return out


def series(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Display label -> the rows of one series, in order of first appearance (see the module doc)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    idents: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        ident = _identity(row)
        key = (label_of(row), json.dumps(ident, sort_keys=True))
        groups.setdefault(key, []).append(row)
        idents[key] = ident
    out: dict[str, list[Row]] = {}
    for (label, ident_key), members in groups.items():
        same = [k for k in groups if k[0] == label]
        if len(same) == 1:
            out[label] = members
            continue
        mine = idents[(label, ident_key)]
        differ = [f for f in mine if len({idents[k].get(f) for k in same}) > 1]
        shown = [mine[f] if f == "folder" else f"{f}={mine[f]}" for f in differ[:3]]
        out[f"{label} ({', '.join(shown)})"] = members
    return out


def _one(values: Iterable[Any]) -> Any:
    """The value all rows share, else None."""
    found = {json.dumps(v, sort_keys=True) for v in values}
    return json.loads(found.pop()) if len(found) == 1 else None


def trained_length_of(rows: Iterable[Row]) -> int | None:
    """The trained length the rows share (older rows do not record it: None)."""
    return _one(r.get("trained_length") for r in rows)


# ------------------------------------------------------------------------------- eval
def _by_metric(records: Iterable[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in records:
        # a key cell with no key token has no loss; its row still says so
        if r.get("metric") is not None and (r.get("loss") is not None or r.get("metric") == "key"):
            out.setdefault(str(r["metric"]), []).append(r)
    return out


def metric_title(metric: str, rows: Sequence[Row]) -> str:
    """The title of ``metric``'s table; a stride or last-token count the rows do not share reads ``?``."""
    title = METRIC_TITLES.get(metric, f"{metric} loss")
    keys = _one(settings_of(r).get("key_tokens") for r in rows) or {}
    return title.format(
        stride=_one(settings_of(r).get("stride") for r in rows) or "?",
        score_last=_one(settings_of(r).get("score_last") for r in rows) or "?",
        identifier=keys.get("identifier", "?"),
        short=keys.get("short", "?"),
    )


def _length_table(rows: Sequence[Row], cell: Callable[[list[Row]], str]) -> str:
    """One row per series, one column per length (every length any row has, in order)."""
    lengths = sorted({int(r["length"]) for r in rows})
    table = []
    for label, members in series(rows).items():
        line: dict[str, Any] = {"method": label}
        for length in lengths:
            at = [r for r in members if int(r["length"]) == length]
            if at:
                line[str(length)] = cell(at)
        table.append(line)
    return format_table(table, ["method", *(str(n) for n in lengths)], markdown=True)


def _loss_cell(at: list[Row]) -> str:
    r = at[-1]  # a cell computed twice (a row rewritten after a torn tail): the last
    if r.get("loss") is None:
        return "no key tokens"
    loss = float(r["loss"])
    if r.get("metric") == "key":  # how many key tokens the loss is over
        return f"{loss:.3f} ({math.exp(loss):.1f}) {int(r.get('tokens') or 0)} tok"
    if r.get("bpb") is not None:  # rows of this version; older ones have no byte count
        return f"{loss:.3f} ({math.exp(loss):.1f}) {float(r['bpb']):.3f} bpb"
    return f"{loss:.3f} ({math.exp(loss):.1f})"


def _ci_cell(at: list[Row]) -> str:
    """``[low, high] n=4``; below 3 documents no interval: ``n=2 (n<3)`` (whatever an older row holds)."""
    r = at[-1]
    docs = r.get("docs")
    if r.get("loss") is None:
        return f"no key tokens n={docs}"
    if r.get("ci_low") is None or r.get("ci_high") is None or (docs is not None and int(docs) < MIN_UNITS):
        return f"n={docs} (n<{MIN_UNITS})"
    text = f"[{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]"
    return text if docs is None else f"{text} n={docs}"


def _paired_cell(at: list[Row]) -> str:
    paired = at[-1].get("paired")
    if not paired:
        return "baseline" if label_of(at[-1]) == settings_of(at[-1]).get("baseline") else ""
    return PairedDifference(**{k: v for k, v in paired.items() if k != "baseline"}).text()


def eval_tables(records: Iterable[Row]) -> dict[str, str]:
    """metric -> Markdown table: loss in nats/token with the perplexity in brackets and, for rows that
    count the bytes they predict, bits per byte; ``key``: the loss over the key tokens and their count
    (the format of the README's SmolLM2 tables)."""
    return {metric: _length_table(rows, _loss_cell) for metric, rows in _by_metric(records).items()}


def eval_ci_tables(records: Iterable[Row]) -> dict[str, str]:
    """metric -> Markdown table of the bootstrap 95% intervals over documents of the same cells, each with
    its number of documents n; no interval below 3 documents."""
    return {metric: _length_table(rows, _ci_cell) for metric, rows in _by_metric(records).items()}


def eval_paired_tables(records: Iterable[Row]) -> dict[str, str]:
    """metric -> Markdown table of each method's loss minus the baseline's, paired by document: the
    difference, its 95% paired bootstrap interval, n, and ``not different`` where the interval holds 0
    (:mod:`ropelab.report.stats`). Only metrics whose rows were paired (the baseline was run)."""
    out = {}
    for metric, rows in _by_metric(records).items():
        if any(r.get("paired") for r in rows):
            out[metric] = _length_table(rows, _paired_cell)
    return out


def paired_title(rows: Sequence[Row]) -> str:
    """The paired table's heading: the baseline the rows were paired against."""
    base = _one((r.get("paired") or {}).get("baseline") for r in rows if r.get("paired"))
    return (
        f"Paired against {base or '?'} (method minus {base or 'baseline'}, nats/token; 95% paired bootstrap "
        "over the same n documents; negative: lower loss than the baseline):"
    )


def eval_report(records: Iterable[Row], *, title: str | None = None, note: str = "") -> str:
    """``report.md`` of eval rows: per metric, the loss table and its 95% intervals."""
    records = list(records)
    by_metric = _by_metric(records)
    models = sorted({model_of(r) for r in records})
    corpora = sorted({corpus_of(r) for r in records})
    trained = trained_length_of(records)
    lines = [f"# {title or ', '.join(models) + ' on ' + ', '.join(corpora)}: loss vs context length", ""]
    if note:
        lines += [note, ""]
    tables, intervals, paired = eval_tables(records), eval_ci_tables(records), eval_paired_tables(records)
    for metric, rows in by_metric.items():
        where = f"; trained length {trained}" if trained else ""
        bpb = ", bits per byte after it" if any(r.get("bpb") is not None for r in rows) else ""
        if metric == "key":
            bpb = ", the number of key tokens after it"
        lines += [
            f"## {metric_title(metric, rows)}",
            "",
            f"Loss in nats/token (perplexity in brackets{bpb}){where}:",
            "",
            tables[metric],
            "",
            f"95% bootstrap intervals over documents (n documents; none below {MIN_UNITS}):",
            "",
            intervals[metric],
            "",
        ]
        if metric in paired:
            lines += [paired_title(rows), "", paired[metric], ""]
    return "\n".join(lines)


def _band(row: Row) -> tuple[float, float]:
    """The interval drawn around a point: none (the point itself) below 3 documents."""
    if row.get("ci_low") is None or row.get("ci_high") is None or int(row.get("docs") or 0) < MIN_UNITS:
        return float(row["loss"]), float(row["loss"])
    return float(row["ci_low"]), float(row["ci_high"])


def eval_plots(records: Iterable[Row], out: str | Path, *, title: str = "") -> list[Path]:
    """``OUT/eval_METRIC.png`` per metric: loss against length, one line per series, the 95% band."""
    from ropelab.report.plots import plot_loss_vs_length

    paths = []
    for metric, rows in _by_metric(records).items():
        if all(r.get("loss") is None for r in rows):  # key cells without a key token: nothing to draw
            continue
        points = {
            label: [(int(r["length"]), float(r["loss"]), *_band(r)) for r in members]
            for label, members in series([r for r in rows if r.get("loss") is not None]).items()
        }
        paths.append(
            plot_loss_vs_length(
                points,
                Path(out) / f"eval_{metric}.png",
                trained_length=trained_length_of(rows),
                title=f"{title + ': ' if title else ''}{metric_title(metric, rows)}",
            )
        )
    return paths


# ---------------------------------------------------------------------------- passkey
def _hits(row: Row) -> tuple[int, int, int]:
    """(keys found, trials, trials that answered no number) of one passkey cell."""
    keys, answers = row.get("keys"), row.get("answers")
    trials = int(row.get("trials") or (len(keys) if keys else 0))
    if keys is not None and answers is not None:
        hits = sum(int(a == k) for a, k in zip(answers, keys, strict=False))
        return hits, trials, sum(a is None for a in answers)
    return round(float(row["accuracy"]) * trials), trials, 0


def _passkey_cell(at: list[Row]) -> str:
    cells = {json.dumps(settings_of(r) | {"depth": r.get("depth")}, sort_keys=True): r for r in at}
    counts = [_hits(r) for r in cells.values()]  # one count per depth (the last row of a cell written twice)
    hits, trials, silent = (sum(c[i] for c in counts) for i in range(3))
    text = f"{hits}/{trials}"
    if trials and silent == trials:
        text += " (no number answered)"
    elif silent:
        text += f" ({silent} without a number)"
    return text


def passkey_table(records: Iterable[Row]) -> str:
    """Markdown table: keys found / trials per method and prompt length, summed over depths."""
    rows = [r for r in records if r.get("length") is not None and r.get("accuracy") is not None]
    if not rows:
        return "(no passkey rows)"
    return _length_table(rows, _passkey_cell)


def _file_part(label: str) -> str:
    return re.sub(r"[^\w.=,()+-]+", "_", label)


def passkey_plots(records: Iterable[Row], out: str | Path, *, title: str = "") -> list[Path]:
    """``OUT/passkey_LABEL.png`` per series: accuracy by length and depth, each cell as correct / trials
    (:func:`ropelab.report.plots.plot_heatmap`, colour-blind-safe), the trial count under the title."""
    from ropelab.report.plots import plot_heatmap

    rows = [r for r in records if r.get("length") is not None and r.get("accuracy") is not None]
    paths = []
    for label, members in series(rows).items():
        grid = {(int(r["length"]), float(r["depth"])): float(r["accuracy"]) for r in members}
        trials = {(int(r["length"]), float(r["depth"])): int(r["trials"]) for r in members if r.get("trials")}
        paths.append(
            plot_heatmap(
                grid,
                Path(out) / f"passkey_{_file_part(label)}.png",
                trained_length=trained_length_of(members),
                title=f"{title + ' ' if title else ''}passkey, {label}",
                trials=trials or None,
            )
        )
    return paths


# ----------------------------------------------------------------------- from files
@dataclass
class Section:
    """One command's part of a report: Markdown text and the files drawn for it."""

    command: str
    text: str
    files: list[Path] = field(default_factory=list)


def render_eval(rows: Sequence[Row], out: Path | None) -> Section:
    text = eval_report(rows)
    return Section("eval", text, eval_plots(rows, out) if out is not None else [])


def render_passkey(rows: Sequence[Row], out: Path | None) -> Section:
    trained = trained_length_of(rows)
    where = f" (trained length {trained})" if trained else ""
    text = "\n".join(
        [
            "# passkey retrieval",
            "",
            f"Keys found / trials, summed over depths{where}:",
            "",
            passkey_table(rows),
            "",
        ]
    )
    return Section("passkey", text, passkey_plots(rows, out) if out is not None else [])


#: command -> its renderer ``(rows, out folder or None) -> Section``; the other commands add theirs
RENDERERS: dict[str, Callable[[Sequence[Row], Path | None], Section]] = {
    "eval": render_eval,
    "passkey": render_passkey,
}


def results_files(path: str | Path) -> list[Path]:
    """The results files of ``path``: itself if a file; a folder's ``results.jsonl``, else its
    ``*results.jsonl`` (per-document ``*doc_results.jsonl`` files are not results)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RopeConfigError(f"no such results file or folder: {path}")
    if (path / "results.jsonl").is_file():
        return [path / "results.jsonl"]
    found = sorted(p for p in path.glob("*results.jsonl") if not p.name.endswith("doc_results.jsonl"))
    if not found:
        raise RopeConfigError(f"{path} holds no results.jsonl (give the folder a command wrote with --out)")
    return found


def read_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every row of every results file of ``paths``, each tagged with its folder's name (:data:`SOURCE`)."""
    if not paths:
        raise RopeConfigError("give at least one results folder or file")
    rows = []
    for path in paths:
        for file in results_files(path):
            name = Path(path).name if Path(path).is_dir() else file.parent.name
            rows.extend({**r, SOURCE: name} for r in read_jsonl(file))
    return rows


@dataclass
class Rendered:
    """What :func:`render_results` made: the Markdown (also printed), the files written, notes."""

    text: str
    sections: list[Section]
    notes: list[str]
    files: list[Path]


def render_results(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    renderers: Mapping[str, Callable[[Sequence[Row], Path | None], Section]] | None = None,
) -> Rendered:
    """Re-render the tables, ``report.md`` and plots of results files, without loading a model.

    ``paths``: results folders (or files); several go side by side. Rows are grouped by ``command`` and
    each group rendered by ``renderers`` (default :data:`RENDERERS`, eval and passkey;
    :func:`ropelab.results.render_results` passes every command's); a command without a renderer gets a
    one-line note. With ``out``, ``OUT/report.md`` and the plots are written there.
    """
    renderers = RENDERERS if renderers is None else renderers
    rows = read_results(paths)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("command") or "?"), []).append(row)
    folder = Path(out) if out is not None else None
    sections, notes = [], []
    for command, members in groups.items():
        renderer = renderers.get(command)
        if renderer is None:
            notes.append(f"{len(members)} rows of command {command!r}: no renderer for it here (skipped)")
            continue
        sections.append(renderer(members, folder))
    text = "\n".join(s.text for s in sections) + "".join(f"\n{n}" for n in notes)
    files = [f for s in sections for f in s.files]
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(text.rstrip("\n") + "\n")
        files.insert(0, folder / "report.md")
    return Rendered(text, sections, notes, files)
