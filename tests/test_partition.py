"""Partitions: deterministic, never worse than greedy LPT, better with recorded durations, and
the i/N argument checked."""

from __future__ import annotations

import random

import pytest

from ci.errors import UserError
from ci.partition import Item, Partitioning, lpt, parse_partition, partition


def random_items(seed: int, count: int) -> list[Item]:
    rng = random.Random(seed)
    return [Item(f"test_{i:03}.py", round(rng.choice([20, 60, 140, 300, 900, 1800, 3600]) * rng.uniform(0.5, 1.5), 1))
            for i in range(count)]


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("n", [2, 4, 7, 14])
def test_never_worse_than_lpt_and_never_under_the_lower_bound(seed, n):
    items = random_items(seed, 20 + seed * 3)
    ours = partition(items, n)
    greedy = Partitioning(tuple(tuple(p) for p in lpt(items, n)))
    assert ours.makespan <= greedy.makespan + 1e-9
    assert ours.makespan >= ours.lower_bound - 1e-9
    assert sorted(i.name for p in ours.parts for i in p) == sorted(i.name for i in items)  # each file exactly once


def test_beats_lpt_on_its_classic_bad_case():
    # LPT gives 7+4+... = makespan 11 on 2 machines for {3,3,2,2,2}; the optimum is 6.
    items = [Item(n, s) for n, s in [("a", 3), ("b", 3), ("c", 2), ("d", 2), ("e", 2)]]
    assert Partitioning(tuple(tuple(p) for p in lpt(items, 2))).makespan == 7
    assert partition(items, 2).makespan == 6


def test_deterministic_for_the_same_input():
    items = random_items(1, 60)
    assert partition(items, 5) == partition(list(reversed(items)), 5)


def test_recorded_durations_make_it_better():
    """Estimates are off; the real durations were recorded by an earlier run. Balancing on them
    gives a real makespan close to the bound; balancing on est_time does not."""
    est = {f"t{i}.py": 100.0 for i in range(12)}
    real = {**{f"t{i}.py": 20.0 for i in range(8)}, **{f"t{i}.py": 400.0 for i in range(8, 12)}}

    def real_makespan(parts: Partitioning) -> float:
        return max(sum(real[i.name] for i in part) for part in parts.parts)

    blind = partition([Item(name, seconds) for name, seconds in est.items()], 4)
    informed = partition([Item(name, real.get(name, seconds)) for name, seconds in est.items()], 4)
    assert real_makespan(informed) == 440 and real_makespan(blind) > real_makespan(informed)


@pytest.mark.parametrize("text, parsed", [("1/1", (1, 1)), ("3/14", (3, 14))])
def test_partition_argument(text, parsed):
    assert parse_partition(text) == parsed


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "-1/3"])
def test_bad_partition_argument(text):
    with pytest.raises(UserError, match="--partition"):
        parse_partition(text)
