"""``ropelab search``: LongRoPE's evolutionary search for per-pair RoPE rescale factors (Ding et al. 2024).

A job module like ``evaluate``, ``lab`` and ``finetune``: it scores real models through
``ropelab.evaluate``'s public functions and the lab through ``ropelab.lab``'s, and knows no internals of
either. Modules, one job each: ``space`` (candidates, constraints, seeds from PI / NTK / YaRN, mutation,
crossover), ``evolve`` (the seeded, budgeted, resumable loop), ``objectives`` (same-tokens loss of a
transformers model or the lab model with a candidate as ``longrope``), ``output`` (the ``longrope`` config,
exports, plot), ``run`` (:func:`search_model`, :func:`search_lab`: one call each), ``report``
(:func:`render_search`: ``ropelab report`` for search rows).
"""

from ropelab.search.evolve import Evaluated, Objective, SearchResult, SearchSettings, Store, evolve
from ropelab.search.objectives import lab_objective, longrope_spec, model_objective
from ropelab.search.output import candidate_rope, exports, plot_best
from ropelab.search.report import best_by_generation, render_search
from ropelab.search.run import SearchRun, run_search, search_lab, search_model
from ropelab.search.space import SEED_METHODS, Candidate, SearchSpace, method_factors, seed_candidates

__all__ = [
    "SEED_METHODS",
    "Candidate",
    "Evaluated",
    "Objective",
    "SearchResult",
    "SearchRun",
    "SearchSettings",
    "SearchSpace",
    "Store",
    "best_by_generation",
    "candidate_rope",
    "evolve",
    "exports",
    "lab_objective",
    "longrope_spec",
    "method_factors",
    "model_objective",
    "plot_best",
    "render_search",
    "run_search",
    "search_lab",
    "search_model",
    "seed_candidates",
]
