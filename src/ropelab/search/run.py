"""``ropelab search``: one library call per target, the CLI is parse -> :func:`search_model` -> print.

:func:`search_model` (a transformers model) and :func:`search_lab` (the lab's RoPE model) build the space
(``d/2`` pairs, ``s = L / L0``), the seeds (PI, NTK, YaRN at ``s``), the objective
(:mod:`ropelab.search.objectives`) and the resume key, run :func:`ropelab.search.evolve.evolve`, and write
``OUT/results.jsonl`` (one stamped row per evaluated candidate: the resume store), ``OUT/best.json`` (the
best factors as a ``longrope`` config and its exports) and ``OUT/search_best.png`` (best loss per
generation against the seeds).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.report.provenance import resume_key
from ropelab.search.evolve import Objective, SearchResult, SearchSettings, Store, evolve
from ropelab.search.output import candidate_rope, exports, plot_best
from ropelab.search.space import Candidate, SearchSpace, seed_candidates


@dataclass
class SearchRun:
    """A finished (or resumed-to-the-end) search and what it wrote."""

    result: SearchResult
    space: SearchSpace
    settings: SearchSettings
    target: int
    trained_length: int
    best: Candidate
    best_loss: float
    exports: dict[str, Any]
    out: Path
    wall_seconds: float
    files: list[Path] = field(default_factory=list)

    @property
    def rope_parameters(self) -> dict[str, Any]:
        return self.exports["rope_parameters"]

    def table(self) -> str:
        """Seeds and the best candidate, loss and evaluations (what the CLI prints)."""
        from ropelab.report import format_table

        rows = [{"candidate": f"seed {k}", "loss": f"{v:.4f}"} for k, v in self.result.seeds.items()]
        rows.append({"candidate": "searched (best)", "loss": f"{self.best_loss:.4f}"})
        head = (
            f"search at {self.target} tokens (s = {self.space.scale:g} over {self.trained_length}): "
            f"{len(self.result.evaluated)} evaluations ({self.result.computed} computed now), "
            f"population {self.settings.population}, seed {self.settings.seed}, {self.wall_seconds:.0f}s"
        )
        return head + "\n" + format_table(rows)


def run_search(
    objective: Objective,
    space: SearchSpace,
    seeds: dict[str, Candidate],
    settings: SearchSettings,
    *,
    context: dict[str, Any],
    geometry: dict[str, Any],
    target: int,
    out: str | Path,
    progress: bool = True,
    title: str = "",
) -> SearchRun:
    """The shared tail of both searches: key, resume store, evolve, outputs (module doc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = resume_key(
        context,
        None,
        space=asdict(space),
        settings=settings.key_fields(),
        objective=dict(objective.identity),
    )
    t0 = time.perf_counter()
    result = evolve(
        objective,
        space,
        seeds,
        settings,
        store=Store(out / "results.jsonl", key, stamped=True),
        progress=progress,
    )
    wall = time.perf_counter() - t0
    best = result.best
    rope = candidate_rope(
        best.candidate,
        head_dim=geometry["head_dim"],
        base=geometry["base"],
        partial_rotary_factor=geometry.get("partial_rotary_factor", 1.0),
        trained=geometry["trained_length"],
        scale=space.scale,
    )
    done = exports(rope)
    summary = {
        "search": key,
        "target": target,
        "trained_length": geometry["trained_length"],
        "scale": space.scale,
        "evaluations": len(result.evaluated),
        "computed_now": result.computed,
        "wall_seconds_now": wall,
        "settings": asdict(settings),
        "space": asdict(space),
        "seeds": result.seeds,
        "best": {**best.candidate.to_dict(), "loss": best.loss, "index": best.index, "origin": best.origin},
        "best_by_generation": result.best_by_generation,
        **done,
    }
    (out / "best.json").write_text(json.dumps(summary, indent=1) + "\n")
    files = [out / "results.jsonl", out / "best.json"]
    with contextlib.suppress(RopeConfigError):  # no matplotlib: the numbers are in best.json
        files.append(
            plot_best(
                result.best_by_generation,
                out / "search_best.png",
                title=title or f"search at {target} tokens",
                references={f"seed {k}": v for k, v in result.seeds.items()},
            )
        )
    return SearchRun(
        result,
        space,
        settings,
        target,
        geometry["trained_length"],
        best.candidate,
        best.loss,
        done,
        out,
        wall,
        files,
    )


def search_model(
    model: Any,
    *,
    target: int,
    settings: SearchSettings | None = None,
    out: str | Path = "out/search",
    corpus: str = "stdlib",
    docs: int = 2,
    score_last: int = 256,
    upper: float | None = None,
    step: float = 0.01,
    n_hat: tuple[int, ...] = (0,),
    dtype: str | None = "auto",
    device: str | None = "auto",
    threads: int | None = None,
    prefill_chunk: int | None = None,
    progress: bool = True,
    log: Any = None,
) -> SearchRun:
    """LongRoPE's search for ``model`` (a name ``ropelab.evaluate.load`` takes, or a
    :class:`ropelab.evaluate.LoadedModel`) at ``target`` tokens: the same-tokens loss of the last
    ``score_last`` tokens of ``docs`` held-out documents of ``corpus`` (its validation split,
    ``ropelab.data.split``). See the module doc."""
    from ropelab.data import load_corpus
    from ropelab.data.split import is_validation
    from ropelab.evaluate import LoadedModel, documents_identity, load, tokenize_documents
    from ropelab.hf import model_geometry
    from ropelab.search.objectives import model_objective

    settings = settings or SearchSettings()
    if docs < 1:
        raise RopeConfigError(f"docs must be >= 1, got {docs}")
    SearchSpace(2, 2.0, None, step, n_hat)  # bad n_hat or step: refused before the slow load
    texts = [d for d in load_corpus(corpus) if is_validation(d.name)] or load_corpus(corpus)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, str):
        loaded = load(model, dtype=dtype, device=device)
    else:
        raise RopeConfigError("search_model takes a model name or a ropelab.evaluate.LoadedModel")
    if log:
        log(f"loaded {loaded.name} ({loaded.dtype}, {loaded.device}); trained length {loaded.trained_length}")
    geo = model_geometry(loaded.model.config)
    if target <= geo["trained_length"]:
        raise RopeConfigError(
            f"--target {target} must exceed the model's trained length {geo['trained_length']}"
        )
    documents = tokenize_documents(loaded.tokenizer, [(d.name, d.text) for d in texts], target, docs)
    context = loaded.run_context("search", documents_identity(corpus, documents, target), threads)
    head_dim = geo["head_dim"]
    pairs = int(head_dim * geo["partial_rotary_factor"]) // 2
    space = SearchSpace(pairs, target / geo["trained_length"], upper, step, n_hat)
    seeds = seed_candidates(
        space,
        head_dim=head_dim,
        base=geo["base"],
        trained=geo["trained_length"],
        partial_rotary_factor=geo["partial_rotary_factor"],
    )
    objective = model_objective(
        loaded,
        target=target,
        documents=documents,
        score_last=score_last,
        context=context,
        prefill_chunk=prefill_chunk,
    )
    return run_search(
        objective,
        space,
        seeds,
        settings,
        context=context,
        geometry=geo,
        target=target,
        out=out,
        progress=progress,
        title=f"{loaded.name}: search at {target} tokens",
    )


def search_lab(
    *,
    target: int,
    settings: SearchSettings | None = None,
    out: str | Path = "out/search-lab",
    checkpoints: str | Path | None = None,
    upper: float | None = None,
    step: float = 0.01,
    n_hat: tuple[int, ...] = (0,),
    threads: int = 2,
    progress: bool = True,
) -> SearchRun:
    """LongRoPE's search for the lab's RoPE model (T = its trained length) at ``target`` (a multiple of T), on
    the lab's held-out windows with its context view (:func:`ropelab.search.objectives.lab_objective`)."""
    import torch

    from ropelab.lab import Lab
    from ropelab.search.objectives import lab_objective

    settings = settings or SearchSettings()
    torch.set_num_threads(threads)
    lab = Lab(Path(out) / "lab", checkpoints=checkpoints, progress=False)
    objective = lab_objective(lab, target=target)
    model, meta = lab.load("rope")
    cfg = model.encoding.rope.config
    trained = int(meta["train"]["length"])
    geo = {
        "head_dim": cfg.head_dim,
        "base": cfg.base,
        "partial_rotary_factor": cfg.partial_rotary_factor,
        "trained_length": trained,
    }
    space = SearchSpace(cfg.rotary_dim // 2, target / trained, upper, step, n_hat)
    seeds = seed_candidates(space, head_dim=cfg.head_dim, base=cfg.base, trained=trained)
    context = {**lab.context("rope"), "command": "search"}
    return run_search(
        objective,
        space,
        seeds,
        settings,
        context=context,
        geometry=geo,
        target=target,
        out=out,
        progress=progress,
        title=f"lab RoPE model (T = {trained}): search at {target // trained}T",
    )
