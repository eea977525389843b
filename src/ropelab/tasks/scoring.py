"""Scoring a prediction against a task's answers, as RULER does (``scripts/eval/synthetic/constants.py``
of NVIDIA/RULER, read for the formulas): a case-insensitive substring test per answer.

- ``all`` (RULER's ``string_match_all``): the fraction of the answers found in the prediction;
- ``part`` (RULER's ``string_match_part``): 1 if any answer is found, else 0;
- ``exact``: 1 if every answer is found, else 0 (``all`` rounded down: the strict per-trial verdict).

Every RULER synthetic task (niah, variable tracking, common and frequent words) reports ``all``; so does
ropelab. The prediction is the generated text up to the end-of-sequence token.
"""

from __future__ import annotations

from collections.abc import Sequence

from ropelab.errors import RopeConfigError

#: the per-trial metrics :func:`score` returns
METRICS = ("all", "part", "exact")


def score(prediction: str, answers: Sequence[str]) -> dict[str, float]:
    """``{"all", "part", "exact"}`` of one prediction (see the module doc)."""
    if not answers:
        raise RopeConfigError("a task sample needs at least one answer")
    text = prediction.lower()
    found = [a.lower() in text for a in answers]
    return {"all": sum(found) / len(found), "part": float(any(found)), "exact": float(all(found))}
