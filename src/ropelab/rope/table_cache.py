"""A growing cache of half cos/sin tables, so that ``Rope.cos_sin`` is computed once per set of frequencies.

An entry holds the rows for positions ``0 .. n-1`` of one table, keyed by everything its values depend
on: the frequencies and attention scaling (so a dynamic method shares one table across all lengths that
give the same frequencies), the angle precision, the device and the output dtype. A request for
positions past ``n`` computes only the new rows and appends them. Rows are computed by the same
elementwise function as an uncached call, on ``arange`` positions, so indexing the table gives exactly
the values the uncached call gives (tested).

Entries are built only when that is cheap next to the request: a single far position (a decode step of
a dynamic method past its trained length, whose frequencies change every step) is computed directly and
cached nowhere. At most ``max_entries`` tables are kept, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import Tensor

__all__ = ["CosSinCache"]

#: ``rows -> (cos, sin)``: the uncached computation for 1-d integer positions ``rows`` ``[n]``.
RowFn = Callable[[Tensor], tuple[Tensor, Tensor]]


class CosSinCache:
    """Tables ``cos, sin``: ``[n, r/2]`` each, rows = positions ``0 .. n-1``, per key; grown on demand."""

    def __init__(self, max_entries: int = 8, min_build: int = 4096, slack: int = 4096) -> None:
        self.max_entries = max_entries
        #: a request may add up to max(4 * its size, min_build) rows to a table; farther, it bypasses
        self.min_build = min_build
        #: extra rows computed past the request when a table grows (1/8 of it, at least 256, at most
        #: ``slack``),
        #: so that a decode loop grows the table once per many steps, not at every step
        self.slack = slack
        self._entries: OrderedDict[Hashable, tuple[Tensor, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def rows(self, key: Hashable) -> int:
        """How many positions the table for ``key`` covers (0 if there is none)."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry[0].shape[0]

    def lookup(
        self, key: Hashable, positions: Tensor, compute: RowFn, max_position: int | None = None
    ) -> tuple[Tensor, Tensor] | None:
        """``(cos, sin)`` of shape ``[*positions.shape, r/2]`` for integer, non-negative ``positions``.

        Grows the table for ``key`` with ``compute`` when it does not reach ``positions.max()`` (pass it as
        ``max_position`` if known); returns ``None`` (the caller computes directly) when that growth would
        be large next to the request.
        """
        if positions.numel() == 0:
            return None
        need = (int(positions.max()) if max_position is None else max_position) + 1
        have = self.rows(key)
        if need > have:
            if need - have > max(4 * positions.numel(), self.min_build):
                return None
            self._grow(key, have, need + min(self.slack, max(256, need // 8)), positions.device, compute)
        self._entries.move_to_end(key)
        cos, sin = self._entries[key]
        if positions.ndim == 1:
            index = positions if positions.dtype in (torch.int64, torch.int32) else positions.long()
            return cos.index_select(0, index), sin.index_select(0, index)
        flat = positions.reshape(-1).long()
        shape = (*positions.shape, cos.shape[-1])
        return cos.index_select(0, flat).reshape(shape), sin.index_select(0, flat).reshape(shape)

    def _grow(self, key: Hashable, have: int, rows: int, device: torch.device, compute: RowFn) -> None:
        new_cos, new_sin = compute(torch.arange(have, rows, device=device))
        old = self._entries.get(key)
        if old is not None:
            new_cos, new_sin = torch.cat((old[0], new_cos)), torch.cat((old[1], new_sin))
        self._entries[key] = (new_cos, new_sin)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
