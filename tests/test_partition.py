"""Partitions: deterministic, never worse than greedy LPT, better with recorded durations, and
the i/N argument checked."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci.errors import UserError
from ci.partition import Item, Partitioning, estimates, lpt, parse_partition, partition, read_durations


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

    blind = partition(estimates(est, {}), 4)
    informed = partition(estimates(est, real), 4)
    assert real_makespan(informed) == 440 and real_makespan(blind) > real_makespan(informed)


@pytest.mark.parametrize("text, parsed", [("1/1", (1, 1)), ("3/14", (3, 14))])
def test_partition_argument(text, parsed):
    assert parse_partition(text) == parsed


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "-1/3"])
def test_bad_partition_argument(text):
    with pytest.raises(UserError, match="--partition"):
        parse_partition(text)


def test_durations_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"a.py": 12.5, "b.py": 0, "c.py": 7}')
    assert read_durations(path) == {"a.py": 12.5, "b.py": 0.0, "c.py": 7.0}
    assert read_durations(None) == {}
    path.write_text("{}")
    assert read_durations(path) == {}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read it (No such file or directory)"),
        (b"\xff\xfe{}", "cannot read it (not UTF-8 text)"),
        ("[1, 2]", "expected a JSON object of file -> seconds, each finite and >= 0, got list"),
        ("12", "got int"),
        ("{", "not JSON"),
        ('{"a.py": -1}', "'a.py': -1 is not allowed"),
        ('{"a.py": NaN}', "'a.py': nan is not allowed"),
        ('{"a.py": Infinity}', "'a.py': nan is not allowed"),
        ('{"a.py": 1e999}', "'a.py': inf is not allowed"),
        ('{"a.py": "12"}', "'a.py': '12' is not allowed"),
        ('{"a.py": true}', "'a.py': True is not allowed"),
        ('{"a.py": null}', "'a.py': None is not allowed"),
        ('{"a.py": [1]}', "'a.py': [1] is not allowed"),
    ],
    ids=["missing", "not-utf8", "list", "number", "not-json", "negative", "nan", "infinity", "overflow", "string",
         "bool", "null", "nested"],
)
def test_a_bad_durations_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "d.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as caught:
        read_durations(path)
    text = str(caught.value)
    assert text.startswith(f"--durations {path}: ") and message in text and "\n" not in text


def test_a_durations_directory_is_unreadable(tmp_path):
    with pytest.raises(UserError, match="cannot read it"):
        read_durations(tmp_path)


# --- properties ----------------------------------------------------------------------------------
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
KEYS = st.text(max_size=40) | st.sampled_from(["a.py", "test/registered/a.py", "/sglang-checkout/test/registered/x/b.py"])


def _as_file_content(draw_value) -> bytes:
    return json.dumps(draw_value, allow_nan=True).encode()


@settings(max_examples=300, deadline=1000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(
    st.binary(max_size=200),
    st.builds(_as_file_content, JSON_VALUES),
    st.builds(_as_file_content, st.dictionaries(KEYS, st.floats() | st.integers() | JSON_SCALARS, max_size=8)),
))
def test_read_durations_returns_clean_numbers_or_one_clear_error(tmp_path_factory, content):
    """Whatever the file holds: a dict of str -> finite float >= 0, or a UserError of one line
    naming the file; never another exception."""
    path = tmp_path_factory.getbasetemp() / "prop-durations.json"
    path.write_bytes(content)
    try:
        result = read_durations(path)
    except UserError as exc:
        assert str(exc).startswith(f"--durations {path}: ") and "\n" not in str(exc)
        return
    assert all(isinstance(k, str) and type(v) is float and math.isfinite(v) and v >= 0 for k, v in result.items())
    data = json.loads(content.decode("utf-8"))
    assert isinstance(data, dict) and result == {k: float(v) for k, v in data.items()}


@settings(max_examples=200, deadline=1000, database=None)
@given(durations=st.dictionaries(KEYS, st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(0, 10**12), max_size=20))
def test_read_durations_round_trips_every_valid_file(tmp_path_factory, durations):
    path = tmp_path_factory.getbasetemp() / "prop-valid-durations.json"
    path.write_text(json.dumps(durations))
    assert read_durations(path) == {k: float(v) for k, v in durations.items()}
