"""``ropelab advise``: which method and parameters for this model and this target length (issue 15).

A thin composition of the job modules, through their public names only (no loop of its own over a
model; every number comes from a call that is resumable on its own):

1. :func:`ropelab.evaluate.evaluate_methods` in ``last`` mode: the same-tokens loss of the last
   ``score_last`` tokens of each document's first ``target`` tokens, every method scoring the same tokens
   (``OUT/target``); paired bootstrap intervals over documents (:mod:`ropelab.report.stats`) against
   ``none`` and against the head of each rank (below);
2. :func:`ropelab.evaluate.evaluate_methods` in ``prefix`` mode at the trained length (``OUT/trained``):
   the cost inside the trained length, each method's loss minus ``none``'s with its paired interval;
3. :func:`ropelab.tasks.task_grid` with ``niah-single`` at the target length (``OUT/niah``): the retrieval
   score (RULER's single needle, rather than :func:`ropelab.evaluate.passkey_grid`, because its rows keep
   every trial's score, so a method pairs with ``none`` trial by trial, and it frames the prompt as a chat
   turn for an instruct model such as SmolLM2-Instruct);
4. optionally :func:`ropelab.search.search_model` (``OUT/search``), whose best factors join the grid as a
   ``longrope`` method (:func:`ropelab.search.longrope_spec`) and are measured like every other;
5. the winner through :func:`ropelab.export.export` for HF, vLLM and llama.cpp, or the stack's refusal.

The ranking rule (never call one method better than another when their paired interval holds 0): sort
by loss at the target; rank 1 is the lowest-loss method (its head) and the methods after it, in loss order,
whose paired interval against the head holds 0 (a tie; also where fewer than 3 documents give no
interval), up to the first that is different from it, which heads rank 2; and so on. So ranks follow the
losses, methods sharing a rank are not told apart, and each new rank starts at a method whose paired
interval against the previous head excludes 0. The winner is rank 1's head; the table also gives every
method's paired difference against it.

Writes ``OUT/advice.md`` and ``OUT/advice.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.export import FORMATS, check_exportable, export, hf_notes
from ropelab.registry import MethodSpec, parse_method
from ropelab.report import format_table
from ropelab.report.stats import PairedDifference, paired_bootstrap_scores

#: the frequency methods of the default grid, each at every default factor
DEFAULT_METHODS = ("linear", "ntk", "yarn", "dynamic")
#: the retrieval task (``ropelab tasks``' name)
RETRIEVAL_TASK = "niah-single"


def default_factors(target: int, trained: int) -> tuple[float, ...]:
    """``s = target / trained`` and the next power of two strictly above it (headroom, as users run YaRN
    s = 4 for a 2x extension): 16k on an 8k model gives (2, 4); 12k gives (1.5, 2)."""
    s = target / trained
    above = 2.0 ** (math.floor(math.log2(s)) + 1)
    return (round(s, 6), above)


def self_extend_group(target: int, trained: int) -> int:
    """Self-Extend's group size G for ``target``: the smallest power of two with
    ``W + (target - W) / G <= trained`` at its default window ``W = trained // 4`` (Jin et al. 2024,
    arXiv 2401.01325, section 3: grouped positions ``floor(p / G)`` shifted by ``W - W / G``, so the largest
    relative position seen is about ``W + (target - W) / G``)."""
    window = max(1, trained // 4)
    need = (target - window) / max(1, trained - window)
    return max(2, 2 ** math.ceil(math.log2(max(need, 1.0))))


def default_grid(target: int, trained: int) -> list[MethodSpec]:
    """``none``; ``linear``, ``ntk``, ``yarn``, ``dynamic`` at each of :func:`default_factors`; and
    ``self-extend(group=G)`` with G from :func:`self_extend_group`."""
    specs = [parse_method("none")]
    for method in DEFAULT_METHODS:
        specs += [parse_method(method, factor=float(s)) for s in default_factors(target, trained)]
    specs.append(parse_method("self-extend", group=self_extend_group(target, trained)))
    return specs


def _specs(methods: str | Iterable[str | MethodSpec] | None, target: int, trained: int) -> list[MethodSpec]:
    """The grid: ``methods`` (the registry's grammar; a method that takes a factor and has none gets
    ``target / trained``), else :func:`default_grid`; ``none`` always first (the cost and retrieval pair
    with it)."""
    from ropelab.evaluate import expand_methods

    specs = default_grid(target, trained) if methods is None else expand_methods(methods, [target / trained])
    labels = [s.label for s in specs]
    if "none" not in labels:
        specs = [parse_method("none"), *specs]
    return list({s.label: s for s in specs}.values())


def rank_ties(losses: dict[str, float], paired: Any) -> list[dict[str, Any]]:
    """The ranking rule of the module doc. ``losses``: label -> loss at the target; ``paired(head,
    others)``: label -> ``paired`` dict (difference, low, high, excludes_zero) of each of ``others`` minus
    ``head``. Returns one dict per method in loss order: ``label``, ``rank``, ``head`` (its rank's head),
    ``vs_head`` (None for a head), ``tie`` (it shares its rank with another method). Ranks follow the loss
    order: a rank is its head and the run of methods after it not different from the head."""
    left = sorted(losses, key=lambda k: losses[k])
    out: list[dict[str, Any]] = []
    rank = 0
    while left:
        head, rest = left[0], left[1:]
        rank += 1
        found = paired(head, rest) if rest else {}
        members = []
        for k in rest:  # the run after the head not different from it
            if found[k].get("excludes_zero"):
                break
            members.append(k)
        group = [head, *members]
        for k in group:
            out.append(
                {"label": k, "rank": rank, "head": head, "vs_head": found.get(k), "tie": len(group) > 1}
            )
        left = rest[len(members) :]
    return out


@dataclass
class Advice:
    """What :func:`advise` found: one row per method (loss order) and the winner's configs."""

    model: str
    target: int
    trained_length: int
    rows: list[dict[str, Any]]
    winner: str
    exports: dict[str, Any]
    out: Path
    wall_seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        """The ranked table (Markdown)."""
        return format_table([_table_row(r) for r in self.rows])

    def text(self) -> str:
        """What ``ropelab advise`` prints and ``OUT/advice.md`` holds."""
        s = self.settings
        lines = [
            f"# advice: {self.model} at {self.target} tokens (trained length {self.trained_length}, "
            f"s = {self.target / self.trained_length:g})",
            "",
            f"Loss: the same-tokens loss (nats/token) of the last {s.get('score_last')} tokens of "
            f"{s.get('docs')} documents' first {self.target} tokens. vs best / vs rank head: paired "
            "difference with its 95% paired bootstrap interval over documents. Rank: methods not different "
            "from their rank's head (interval holds 0) share its rank ('=' marks a tie). Cost: prefix loss "
            f"at the trained length {self.trained_length} minus none's. Retrieval: {RETRIEVAL_TASK}'s "
            f"{s.get('retrieval_metric')} score at the target length over {s.get('retrieval_trials')} "
            "trials, and its paired difference against none (trial by trial).",
            "",
            self.table(),
            "",
            f"Winner: **{self.winner}**" + _tie_note(self.rows),
            "",
        ]
        for fmt in ("rope_parameters", *FORMATS):
            done = self.exports.get(fmt, {})
            if "refused" in done:
                lines.append(f"- {fmt}: cannot carry {self.winner}: {done['refused']}")
                alt = done.get("instead")
                if alt:
                    lines.append(
                        f"  - instead: {alt['label']} (rank {alt['rank']}): {_short(alt['export'], fmt)}"
                    )
            else:
                lines.append(f"- {fmt}: {_short(done, fmt)}")
        lines += [f"- note: {n}" for n in self.exports.get("notes", [])]
        lines += ["", f"wall time {self.wall_seconds:.0f}s; written: {', '.join(str(f) for f in self.files)}"]
        return "\n".join(lines)


def _short(done: dict[str, Any], fmt: str) -> str:
    if fmt in ("hf", "rope_parameters"):
        return "`" + json.dumps(done) + "`"
    return "`" + str(done.get("command", done)) + "`"


def _tie_note(rows: Sequence[dict[str, Any]]) -> str:
    tied = [r["label"] for r in rows if r["rank"] == 1][1:]
    if not tied:
        return " (the only method at rank 1)"
    return f" (lowest loss; tied with {', '.join(tied)}: their paired intervals against it hold 0)"


def _fmt_paired(p: dict[str, Any] | None, digits: int = 3) -> str:
    """A row's ``paired`` dict as :meth:`ropelab.report.stats.PairedDifference.text` writes it."""
    if not p:
        return ""
    fields = {k: p[k] for k in PairedDifference.__dataclass_fields__}
    return PairedDifference(**fields).text(digits)


def _table_row(r: dict[str, Any]) -> dict[str, Any]:
    ret = r.get("retrieval")
    return {
        "rank": f"{r['rank']}{'=' if r['tie'] else ''}",
        "method": r["label"] if len(r["label"]) <= 48 else r["label"][:45] + "...",  # searched longrope
        "loss at target": f"{r['loss']:.4f}",
        "vs best": _fmt_paired(r.get("vs_best")) or "(best)",
        "vs rank head": _fmt_paired(r.get("vs_head")) or "(head)",
        "cost inside L0": _fmt_paired(r.get("cost")) if r["label"] != "none" else "(none)",
        "retrieval": "" if ret is None else f"{ret['score']:.2f}",
        "retrieval vs none": "" if ret is None else _fmt_paired(ret.get("vs_none"), 2),
        "stacks": r["stacks"],
    }


def _stack_exports(loaded: Any, spec: MethodSpec) -> dict[str, Any]:
    """``{"rope_parameters", "hf", "vllm", "llama.cpp"}``: each :func:`ropelab.export.export` of ``spec``
    resolved on the model, or ``{"refused": reason}`` (attention-level methods and log-n by
    :func:`ropelab.export.check_exportable`)."""
    from ropelab.export import to_hf

    try:
        check_exportable(spec.method + ("+log-n" if spec.log_n else ""))
    except RopeConfigError as err:
        return {fmt: {"refused": f"{err} (ropelab-only)"} for fmt in ("rope_parameters", *FORMATS)}
    rope = loaded.extensions([spec])[spec.label].rope
    out: dict[str, Any] = {}
    for fmt in ("rope_parameters", *FORMATS):
        try:
            out[fmt] = to_hf(rope) if fmt == "rope_parameters" else export(rope, fmt)
        except RopeConfigError as err:
            out[fmt] = {"refused": str(err)}
    out["notes"] = hf_notes(rope) + [
        f"{fmt} differs from ropelab: {line}" for fmt in FORMATS for line in out[fmt].get("differences", [])
    ]
    return out


def _retrieval(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """label -> mean exact score over every trial of every depth, and its paired difference with none
    (trial by trial: the same prompts for every method)."""
    trials: dict[str, list[float]] = {}
    for r in sorted(records, key=lambda r: (r["depth"] is None, r["depth"] or 0.0)):
        trials.setdefault(r["label"], []).extend(float(x) for x in r["scores"][r["metric"]])
    out = {}
    for label, scores in trials.items():
        vs = None
        if label != "none" and "none" in trials:
            vs = paired_bootstrap_scores(scores, trials["none"]).to_dict()
        out[label] = {"score": sum(scores) / len(scores), "trials": len(scores), "vs_none": vs}
    return out


def advise(
    model: Any,
    *,
    target: int,
    methods: str | Iterable[str | MethodSpec] | None = None,
    corpus: str = "stdlib",
    docs: int = 4,
    score_last: int = 256,
    trials: int = 4,
    depths: Sequence[float] = (0.0, 0.5, 1.0),
    search_budget: int | None = None,
    out: str | Path = "out/advise",
    dtype: str | None = "auto",
    device: str | None = "auto",
    threads: int | None = None,
    progress: bool = True,
    log: Any = None,
) -> Advice:
    """Rank the methods of the grid for ``model`` at ``target`` tokens and write the winner's configs
    (module doc). ``model``: a name :func:`ropelab.evaluate.load` takes, or a
    :class:`ropelab.evaluate.LoadedModel`. ``methods``: the grid (default :func:`default_grid`).
    ``search_budget``: run :func:`ropelab.search.search_model` with this many evaluations first and add
    its best as a method. Resumable: each step's rows are its command's own, and a rerun computes nothing
    that is there."""
    from ropelab.evaluate import LoadedModel, evaluate_methods, load

    if target < 2 or docs < 1 or score_last < 1 or trials < 1:
        raise RopeConfigError(
            f"target, docs, score_last and trials must be positive, got {target}, {docs}, {score_last}, "
            f"{trials}"
        )
    if search_budget is not None and search_budget < 1:
        raise RopeConfigError(f"--search budget must be >= 1, got {search_budget}")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    say = log or (lambda _line: None)
    t0 = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load(model, dtype=dtype, device=device)
    trained = loaded.trained_length
    if target <= trained:
        raise RopeConfigError(
            f"--target {target} is within {loaded.name}'s trained length {trained}: the model needs no "
            f"extension there (use `ropelab eval` to measure it); give a target above {trained}"
        )
    specs = _specs(methods, target, trained)
    if score_last >= target:
        raise RopeConfigError(f"--score-last {score_last} must be below --target {target}")
    loaded.extensions(specs)  # a method the model cannot take fails here, before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"corpus": corpus, "docs": docs, "threads": threads, "progress": progress, "plots": False}
    if search_budget:
        from ropelab.search import SearchSettings, longrope_spec, search_model

        say(f"search: {search_budget} evaluations at {target} tokens")
        found = search_model(
            loaded,
            target=target,
            settings=SearchSettings(population=min(16, search_budget), budget=search_budget),
            out=out / "search",
            corpus=corpus,
            docs=min(docs, 2),
            score_last=score_last,
            threads=threads,
            progress=progress,
        )
        specs.append(longrope_spec(found.best, scale=found.space.scale))
    labels = [s.label for s in specs]

    def at_target(baseline: str, chosen: Sequence[str]) -> dict[str, dict[str, Any]]:
        run = evaluate_methods(
            loaded,
            methods=[s for s in specs if s.label in chosen],
            mode="last",
            score_last=score_last,
            lengths=[target - score_last],
            baseline=baseline,
            out=out / "target",
            **common,
        )
        return {r["label"]: r for r in run.records if r["metric"] == "last"}

    say(f"same-tokens loss at {target} of {len(specs)} methods")
    first = at_target("none", labels)
    losses = {k: float(r["loss"]) for k, r in first.items()}
    heads: dict[str, dict[str, dict[str, Any]]] = {}

    def paired(head: str, others: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = first if head == "none" else at_target(head, [head, *others])
        heads[head] = {k: rows[k]["paired"] for k in others}
        return heads[head]

    ranked = rank_ties(losses, paired)
    best = ranked[0]["label"]
    vs_best = heads[best] if len(labels) > 1 else {}  # rank 1's head was paired with every other method

    say(f"cost inside the trained length {trained}")
    cost_run = evaluate_methods(
        loaded,
        methods=specs,
        mode="prefix",
        lengths=[trained],
        baseline="none",
        out=out / "trained",
        **common,
    )
    cost = {r["label"]: r for r in cost_run.records if r["metric"] == "prefix"}

    say(f"retrieval: {RETRIEVAL_TASK} at {target}")
    from ropelab.tasks import task_grid

    niah = task_grid(
        loaded,
        methods=specs,
        tasks=RETRIEVAL_TASK,
        lengths=[target],
        depths=depths,
        trials=trials,
        threads=threads,
        progress=progress,
        plots=False,
        out=out / "niah",
    )
    retrieval = _retrieval(niah.records)

    stacks = {s.label: _stack_exports(loaded, s) for s in specs}
    rows = []
    for r in ranked:
        k = r["label"]
        carried = [f for f in FORMATS if "refused" not in stacks[k][f]]
        rows.append(
            {
                **r,
                "method": first[k]["method"],
                "params": first[k]["params"],
                "resolved": first[k]["resolved"],
                "loss": losses[k],
                "ci": [first[k]["ci_low"], first[k]["ci_high"]],
                "docs": first[k]["docs"],
                "vs_best": None if k == best else vs_best[k],
                "vs_none": first[k]["paired"],
                "cost": cost[k]["paired"],
                "loss_inside": cost[k]["loss"],
                "retrieval": retrieval.get(k),
                "stacks": ", ".join(carried) if carried else "ropelab-only",
            }
        )
    winner = stacks[best]
    exports: dict[str, Any] = {"label": best}
    for fmt in ("rope_parameters", *FORMATS):
        exports[fmt] = dict(winner[fmt])
        if "refused" in winner[fmt]:  # the best-ranked method this stack can carry
            alt = next((r for r in rows if "refused" not in stacks[r["label"]][fmt]), None)
            if alt is not None:
                exports[fmt]["instead"] = {
                    "label": alt["label"],
                    "rank": alt["rank"],
                    "vs_best": alt["vs_best"],
                    "export": stacks[alt["label"]][fmt],
                }
    exports["notes"] = winner.get("notes", [])
    settings = {
        "corpus": corpus,
        "docs": docs,
        "score_last": score_last,
        "retrieval_task": RETRIEVAL_TASK,
        "retrieval_trials": len(depths) * trials,
        "retrieval_metric": next((r["metric"] for r in niah.records), None),
        "depths": list(depths),
        "search_budget": search_budget,
        "methods": labels,
    }
    advice = Advice(
        model=loaded.name,
        target=target,
        trained_length=trained,
        rows=rows,
        winner=best,
        exports=exports,
        out=out,
        wall_seconds=time.perf_counter() - t0,
        settings=settings,
        files=[out / "advice.md", out / "advice.json"],
    )
    document = {
        "command": "advise",
        "model": loaded.name,
        "model_id": loaded.model_id,
        "target": target,
        "trained_length": trained,
        "settings": settings,
        "winner": best,
        "rows": rows,
        "exports": exports,
        "sources": {
            "target": str(out / "target"),
            "trained": str(out / "trained"),
            "retrieval": str(out / "niah"),
        },
    }
    (out / "advice.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / "advice.md").write_text(advice.text() + "\n")
    return advice
