"""Typed records for what crosses module (and XCom) boundaries in the country pipeline.

Frozen dataclasses with `as_dict()` / `from_dict()`: XCom carries plain JSON, the code works with the records,
so a key typo fails where the record is built rather than three tasks later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Numeric counts of one step (or one chunk of it), as the ledger stores them.
StepCounts = dict[str, int]


OPEN_END = 2**62  # a chunk bound at or above this is the open end of the id space


@dataclass(frozen=True)
class Chunk:
    """A keyset range of customer_id: the unit of export, transform, load and compare."""

    chunk: int
    lo: int
    hi: int
    customers: int

    def as_dict(self) -> dict[str, int]:
        return {"chunk": self.chunk, "lo": self.lo, "hi": self.hi, "customers": self.customers}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Chunk:
        return cls(int(d["chunk"]), int(d["lo"]), int(d["hi"]), int(d["customers"]))


@dataclass(frozen=True)
class Lane:
    """One mapped task instance's share of a stage: lane k of N takes chunks k, k+N, ..."""

    lane: int
    lanes: int
    chunks: tuple[Chunk, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"lane": self.lane, "lanes": self.lanes, "chunks": [c.as_dict() for c in self.chunks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Lane) -> Lane:
        if isinstance(d, Lane):
            return d
        return cls(int(d["lane"]), int(d["lanes"]), tuple(Chunk.from_dict(c) for c in d["chunks"]))

    @classmethod
    def split(cls, chunks: list[Chunk], parallelism: int) -> list[Lane]:
        """At most `parallelism` lanes (at least one, even for a country with no customers)."""
        lanes = max(1, min(parallelism, len(chunks)))
        return [cls(k, lanes, tuple(chunks[k::lanes])) for k in range(lanes)]

    @property
    def label(self) -> str:
        """What the UI shows for the mapped task instance, e.g. `lane 1/4: chunks 0, 4, 8 (customers 1–2999)`."""
        head = f"lane {self.lane + 1}/{self.lanes}"
        if not self.chunks:
            return f"{head}: no chunks"
        ids = [c.chunk for c in self.chunks]
        shown = ", ".join(map(str, ids)) if len(ids) <= 4 else f"{ids[0]}, {ids[1]}, …, {ids[-1]} ({len(ids)})"
        lo, hi = min(c.lo for c in self.chunks), max(c.hi for c in self.chunks)
        # the last chunk is open-ended (chunks tile every id up to BIGINT's max): say so, not 9223372036854775807
        ids_of = f"customers {lo} and up" if hi >= OPEN_END else f"customers {lo}–{hi}"
        return f"{head}: chunk{'s' if len(ids) > 1 else ''} {shown} ({ids_of})"
