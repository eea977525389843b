"""The one exception type that bad configuration and bad input raise."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RopeConfigError(ValueError):
    """A RoPE / encoding configuration or input that cannot be used.

    The message names the offending key or value and says how to fix it. The CLI prints it
    as one line on stderr and exits with status 2.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
