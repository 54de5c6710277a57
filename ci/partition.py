"""Split a stage's files into N partitions balanced by estimated time (pure, deterministic).

Greedy LPT first (longest first, to the least-loaded partition, file name breaking ties), then a
local search that moves or swaps files out of the longest partition while that shortens it, so
the result is never worse than LPT. Estimates come from recorded durations when given, else
est_time."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ci.errors import UserError

# A durations file lists one number per test file (SGLang has ~1000): 16 MiB is far past any.
MAX_DURATIONS_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    name: str
    seconds: float


@dataclass(frozen=True)
class Partitioning:
    parts: tuple[tuple[Item, ...], ...]

    @property
    def totals(self) -> tuple[float, ...]:
        return tuple(sum(i.seconds for i in part) for part in self.parts)

    @property
    def makespan(self) -> float:
        return max(self.totals, default=0.0)

    @property
    def lower_bound(self) -> float:
        items = [i for part in self.parts for i in part]
        if not items:
            return 0.0
        return max(max(i.seconds for i in items), sum(i.seconds for i in items) / len(self.parts))


def parse_partition(text: str, most: int | None = None) -> tuple[int, int]:
    """'i/N' (1-based, ASCII digits) -> (i, N); N at most `most` (config/limits.yaml partitions)."""
    match = re.fullmatch(r"([0-9]{1,9})/([0-9]{1,9})", text)
    if not match:
        raise UserError(f"--partition {text!r}: expected i/N with whole numbers, e.g. 2/4")
    index, total = int(match.group(1)), int(match.group(2))
    if total < 1 or not 1 <= index <= total:
        raise UserError(f"--partition {text!r}: need 1 <= i <= N and N >= 1")
    if most is not None and total > most:
        raise UserError(f"--partition {text!r}: N must be <= {most} (config/limits.yaml partitions)")
    return index, total


def lpt(items: Sequence[Item], n: int) -> list[list[Item]]:
    parts: list[list[Item]] = [[] for _ in range(n)]
    totals = [0.0] * n
    for item in sorted(items, key=lambda i: (-i.seconds, i.name)):
        target = min(range(n), key=lambda p: (totals[p], p))
        parts[target].append(item)
        totals[target] += item.seconds
    return parts


def _improve(parts: list[list[Item]], rounds: int = 1000) -> list[list[Item]]:
    """Move or swap a file between the longest partition and another while the makespan drops."""
    for _ in range(rounds):
        totals = [sum(i.seconds for i in p) for p in parts]
        worst = max(range(len(parts)), key=lambda p: (totals[p], -p))
        best_gain, best_move = 1e-9, None
        for other in range(len(parts)):
            if other == worst:
                continue
            for a in parts[worst]:
                # move a: the pair's new max must be under the old worst total
                new_max = max(totals[worst] - a.seconds, totals[other] + a.seconds)
                if totals[worst] - new_max > best_gain:
                    best_gain, best_move = totals[worst] - new_max, (other, a, None)
                for b in parts[other]:
                    delta = a.seconds - b.seconds
                    if delta <= 0:
                        continue
                    new_max = max(totals[worst] - delta, totals[other] + delta)
                    if totals[worst] - new_max > best_gain:
                        best_gain, best_move = totals[worst] - new_max, (other, a, b)
        if best_move is None:
            break
        other, a, b = best_move
        parts[worst].remove(a)
        parts[other].append(a)
        if b is not None:
            parts[other].remove(b)
            parts[worst].append(b)
    return [sorted(p, key=lambda i: (-i.seconds, i.name)) for p in parts]


def partition(items: Sequence[Item], n: int) -> Partitioning:
    """Balanced, deterministic, never worse than LPT."""
    if n < 1:
        raise UserError("the number of partitions must be >= 1")
    return Partitioning(tuple(tuple(p) for p in _improve(lpt(items, n))))
