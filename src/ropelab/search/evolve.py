"""The evolutionary search loop (LongRoPE section 3.2), seeded, budgeted, resumable after every evaluation.

One generation (semantics of microsoft/LongRoPE ``evolution/algorithms/genetic_base.py`` at 3d00e1f, read,
not copied): the ``parents`` best of the population survive; ``mutations`` children are mutations of a
random parent, ``crossovers`` children are crossovers of two distinct random parents (a crossover that
keeps breaking the order after ``crossover_tries`` falls back to mutating its first parent); a child that
was already evaluated is drawn again, so every evaluation is of a new candidate. Generation 0 is the seeds
(PI, NTK, YaRN) and mutations of them, round-robin, up to ``population`` members.

The loop is pure given its seed: every random draw comes from one ``random.Random(seed)``, so the same
settings give the same candidates in the same order. A :class:`Store` makes that a resume: each evaluated
candidate is appended to a jsonl file keyed by the settings; a run started again replays the draws and
takes the losses already there instead of calling the objective, so a resumed search ends exactly where an
uninterrupted one does. ``budget`` is not in the key: a larger budget continues a finished search.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.report import append_jsonl, progress_bar, read_jsonl
from ropelab.search.space import Candidate, SearchSpace


@dataclass(frozen=True)
class SearchSettings:
    """How the search runs. ``budget``: objective evaluations in all (seeds included); ``parents``,
    ``mutations``, ``crossovers`` per generation default to ``population // 2``, ``// 4`` and ``// 4``
    (the authors' LLaMA setting is 64 / 32 / 16 / 16)."""

    population: int = 16
    budget: int = 64
    seed: int = 0
    parents: int | None = None
    mutations: int | None = None
    crossovers: int | None = None
    p_mutate: float = 0.3
    crossover_tries: int = 20

    def __post_init__(self) -> None:
        for name in ("population", "budget", "crossover_tries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RopeConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.population < 2:
            raise RopeConfigError(f"population must be >= 2, got {self.population}")
        defaults = {
            "parents": max(2, self.population // 2),
            "mutations": max(1, self.population // 4),
            "crossovers": max(1, self.population // 4),
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            value = default if value is None else value
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RopeConfigError(f"{name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, value)
        if not 2 <= self.parents <= self.population:  # type: ignore[operator]
            raise RopeConfigError(
                f"parents must be in [2, population = {self.population}], got {self.parents}"
            )
        if self.mutations + self.crossovers < 1:  # type: ignore[operator]
            raise RopeConfigError("a generation needs at least one mutation or crossover")
        if not 0 < self.p_mutate <= 1:
            raise RopeConfigError(f"p_mutate must be in (0, 1], got {self.p_mutate}")

    def key_fields(self) -> dict[str, Any]:
        """Every setting that changes which candidates are drawn (all but ``budget``)."""
        return {k: v for k, v in asdict(self).items() if k != "budget"}


@dataclass(frozen=True)
class Objective:
    """What the search minimises: ``loss(candidate) -> float`` (lower is better; a non-finite loss ranks
    last). ``identity``: everything besides the candidate that changes a loss (model, target length,
    tokens scored, ...), part of the resume key. ``row``: the provenance fields of a results row for a
    candidate (``ropelab.report.provenance.stamp`` output, less the numbers), ``None`` for none."""

    loss: Callable[[Candidate], float]
    identity: Mapping[str, Any]
    row: Callable[[Candidate], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Evaluated:
    """One evaluation: the candidate, its loss, the generation and how it was made (a seed's name,
    ``mutation``, ``crossover``), its place in the order of evaluation, and whether the store had it."""

    candidate: Candidate
    loss: float
    generation: int
    origin: str
    index: int
    cached: bool = False


@dataclass
class SearchResult:
    """The search's outcome: every evaluation in order, the best per generation, the seeds' losses."""

    evaluated: list[Evaluated] = field(default_factory=list)
    #: (generation, evaluations so far, best loss so far) after each generation
    best_by_generation: list[tuple[int, int, float]] = field(default_factory=list)
    seeds: dict[str, float] = field(default_factory=dict)
    key: str = ""

    @property
    def best(self) -> Evaluated:
        return min(self.evaluated, key=lambda e: (_rank(e.loss), e.index))

    @property
    def computed(self) -> int:
        """Evaluations this run made (not taken from the store)."""
        return sum(not e.cached for e in self.evaluated)


def _rank(loss: float) -> float:
    return loss if math.isfinite(loss) else math.inf


class Store:
    """The jsonl of evaluated candidates of one search (rows whose ``search`` field is ``key``).

    ``stamped``: reuse only rows of the current layout with every provenance field
    (:func:`ropelab.report.provenance.is_current`), as every command does; off for a bare objective."""

    def __init__(self, path: str | Path, key: str, *, stamped: bool = False) -> None:
        from ropelab.report.provenance import is_current

        self.path = Path(path)
        self.key = key
        self.losses: dict[str, float] = {}
        if self.path.exists():
            for row in read_jsonl(self.path):
                if row.get("search") != key or "loss" not in row or "candidate" not in row:
                    continue
                if stamped and not is_current(row):
                    continue
                self.losses[row["candidate"]["fingerprint"]] = float(row["loss"])

    def append(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path, row)


class _BudgetSpent(Exception):
    pass


def evolve(
    objective: Objective,
    space: SearchSpace,
    seeds: Mapping[str, Candidate],
    settings: SearchSettings,
    *,
    store: Store | None = None,
    progress: bool = False,
    desc: str = "search",
) -> SearchResult:
    """Run the search (module doc) until ``settings.budget`` evaluations; resume from ``store``."""
    if not seeds:
        raise RopeConfigError("the search needs at least one seed candidate")
    for cand in seeds.values():
        space.check(cand)
    rng = random.Random(settings.seed)
    result = SearchResult(key=store.key if store else "")
    seen: dict[str, Evaluated] = {}
    bar = progress_bar(settings.budget, desc=desc, unit="evals", disable=not progress)

    def evaluate(cand: Candidate, generation: int, origin: str) -> Evaluated:
        if len(result.evaluated) >= settings.budget:
            raise _BudgetSpent
        space.check(cand)
        fp = cand.fingerprint
        cached = store is not None and fp in store.losses
        loss = store.losses[fp] if cached else float(objective.loss(cand))  # type: ignore[union-attr]
        done = Evaluated(cand, loss, generation, origin, len(result.evaluated), cached)
        seen[fp] = done
        result.evaluated.append(done)
        if store is not None and not cached:
            row = objective.row(cand) if objective.row is not None else {}
            store.append(
                {
                    **row,
                    "key": f"{store.key}:{fp}",
                    "search": store.key,
                    "candidate": {**cand.to_dict(), "fingerprint": fp},
                    "generation": generation,
                    "origin": origin,
                    "index": done.index,
                    "loss": loss,
                }
            )
        bar.update(1)
        bar.set_postfix_str(f"gen {generation} best {_rank(result.best.loss):.4f}")
        return done

    def new_mutation(parent: Candidate) -> Candidate | None:
        for _ in range(100):
            child = space.mutate(parent, rng, p=settings.p_mutate)
            if child.fingerprint not in seen:
                return child
        return None  # the neighbourhood is exhausted: skip this child

    def new_crossover(a: Candidate, b: Candidate) -> tuple[Candidate | None, str]:
        for _ in range(settings.crossover_tries):
            child = space.crossover(a, b, rng)
            if child is not None and child.fingerprint not in seen:
                return child, "crossover"
        return new_mutation(a), "mutation"

    def close_generation(generation: int) -> None:
        done = len(result.evaluated)
        if done and (not result.best_by_generation or result.best_by_generation[-1][1] != done):
            result.best_by_generation.append((generation, done, _rank(result.best.loss)))

    population: list[Evaluated] = []
    generation = 0
    try:
        for name, cand in seeds.items():
            if cand.fingerprint not in seen:
                population.append(evaluate(cand, 0, name))
                result.seeds[name] = population[-1].loss
        bases = list(seeds.values())
        k = 0
        while len(population) < settings.population:
            child = new_mutation(bases[k % len(bases)])
            k += 1
            if child is not None:
                population.append(evaluate(child, 0, "mutation"))
            elif k > 100 * settings.population:
                break
        close_generation(0)
        while True:
            generation += 1
            parents = sorted(population, key=lambda e: (_rank(e.loss), e.index))[: settings.parents]
            population = list(parents)
            for _ in range(settings.mutations):  # type: ignore[arg-type]
                child = new_mutation(parents[rng.randrange(len(parents))].candidate)
                if child is not None:
                    population.append(evaluate(child, generation, "mutation"))
            for _ in range(settings.crossovers):  # type: ignore[arg-type]
                i, j = sorted(rng.sample(range(len(parents)), 2))
                maybe, origin = new_crossover(parents[i].candidate, parents[j].candidate)
                if maybe is not None:
                    population.append(evaluate(maybe, generation, origin))
            close_generation(generation)
            if len(population) == len(parents):  # nothing new could be drawn: the space is exhausted
                break
    except _BudgetSpent:
        close_generation(generation)
    finally:
        bar.close()
    return result
