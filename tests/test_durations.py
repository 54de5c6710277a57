"""The durations history: records and the store (merge, windowing, p90, corrupt input), the
fallbacks partitions take, drift, and `invoke durations update/report` through the door."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci.config import DriftPolicy, HistoryPolicy, load_config
from ci.durations import (
    EMPTY_STORE,
    Durations,
    DurationsError,
    Entry,
    RunRecord,
    Sample,
    Store,
    UnitRecord,
    drift,
    estimates,
    merge,
    parse_durations,
    parse_record,
    parse_store,
    quantile,
    read_durations,
    read_durations_or_warn,
    record_json,
    store_json,
)
from tests.conftest import base_env, run_door

# The tests' own policies (hand-checked below), not the shipped durations.yaml: a retune there moves no test.
HISTORY = HistoryPolicy(keep_runs=16, window_days=7, quantile=0.9, max_store_bytes=16_000_000)
DRIFT = DriftPolicy(factor=1.5, min_runs=3, suggest_round_s=10, chart_rows=30)
_SHIPPED = load_config(env={})
CONFIG = dataclasses.replace(_SHIPPED, durations=dataclasses.replace(_SHIPPED.durations, history=HISTORY, drift=DRIFT))
T0 = dt.datetime(2026, 8, 30, 12, tzinfo=dt.timezone.utc)


def record(run: str, when: dt.datetime, arch: str = "mi300", **units: tuple[str, float]) -> RunRecord:
    """units: name -> (outcome, seconds); names with `__` stand for `::` (a shard of one class)."""
    made = []
    for name, (outcome, seconds) in units.items():
        name = name.replace("__", "::").replace("_py", ".py")
        classes = {name.split("::")[1]: seconds} if "::" in name else {}
        made.append(UnitRecord(name, "suite-a", 100.0, outcome, seconds, classes))
    return RunRecord(run, "stage-x-1of2", arch, "rocm700", "rocm/sgl-dev:v1-rocm700-mi30x-20260830", "sha256:ab",
                     when, tuple(made))


def test_p90_is_the_nearest_rank():
    assert quantile([5.0], 0.9) == 5.0
    assert quantile(list(map(float, range(1, 11))), 0.9) == 9.0  # 9 of 10 at or below
    assert quantile(list(map(float, range(1, 17))), 0.9) == 15.0  # ceil(14.4) = 15th
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([1.0, 2.0], 1.0) == 2.0


def test_merge_keeps_the_newest_passing_runs_within_the_window():
    policy = dataclasses.replace(HISTORY, keep_runs=3, window_days=7)
    records = [record(f"r{i}", T0 - dt.timedelta(days=i), a_py=("passed", 100.0 + i)) for i in range(10)]
    records.append(record("bad", T0, a_py=("failed", 5.0), b_py=("timeout", 900.0), c_py=("flaky", 40.0)))
    store = merge(EMPTY_STORE, records, T0, policy)
    assert list(store.entries) == [("mi300", "a.py")]  # failed, timed-out and flaky runs never count
    assert [s.seconds for s in store.entries[("mi300", "a.py")].runs] == [100.0, 101.0, 102.0]
    # a record merged again counts once; an older one past the window is dropped on merge
    again = merge(store, [records[0], record("old", T0 - dt.timedelta(days=8), a_py=("passed", 1.0))], T0, policy)
    assert again.entries == store.entries
    # the window also moves: ten days later, nothing of these is left
    assert merge(store, [], T0 + dt.timedelta(days=10), policy).entries == {}


def test_estimates_are_per_arch_and_from_the_stores_own_time():
    records = [record(f"r{i}", T0 - dt.timedelta(hours=i), a_py=("passed", float(s))) for i, s in enumerate(range(10, 110, 10))]
    records.append(record("x", T0, arch="mi355", a_py=("passed", 7.0)))
    store = merge(EMPTY_STORE, records, T0, HISTORY)
    assert estimates(store, "mi300", None, HISTORY) == {"a.py": 90.0}
    assert estimates(store, "mi355", None, HISTORY) == {"a.py": 7.0}
    assert estimates(store, "mi325", None, HISTORY) == {}
    # a store read much later gives the same estimates (route and stage jobs must agree)
    later = Durations(store=parse_store(json.loads(store_json(store)), "s"))
    assert later.for_arch("mi300", HISTORY) == {"a.py": 90.0}


def test_shards_record_per_class_and_the_store_keys_classes():
    unit = UnitRecord("big.py::TestA+TestB", "suite-a", 5400.0, "passed", 1200.0, {"TestA": 500.0, "TestB": 700.0})
    run = RunRecord("1-1", "s", "mi300", "rocm700", "i", "d", T0, (unit,))
    store = merge(EMPTY_STORE, [parse_record(json.loads(record_json(run)), "r")], T0, HISTORY)
    assert estimates(store, "mi300", None, HISTORY) == {"big.py::TestA": 500.0, "big.py::TestB": 700.0}
    assert store.entries[("mi300", "big.py::TestA")].est_time == 5400.0  # the file's est_time, for drift


def test_the_store_round_trips_and_stays_small():
    records = [record(f"{i}-1", T0 - dt.timedelta(hours=i), **{f"f{n}_py": ("passed", 60.0 + n) for n in range(250)})
               for i in range(16)]
    store = merge(EMPTY_STORE, records, T0, HISTORY)
    text = store_json(store)
    assert parse_store(json.loads(text), "s") == store
    assert len(text) < 250 * 16 * 110  # about a hundred bytes a run


@pytest.mark.parametrize("text, wanted", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a durations store"),
    ('{"a.py": -1}', "not a number of seconds"),
    ('{"a.py": NaN}', "not a number of seconds"),
    ('{"format": "sgl-ci-durations", "kind": "store", "version": 2}', "version 2; this toolkit reads version 1"),
    ('{"format": "sgl-ci-durations", "kind": "store", "version": 1, "fields": ["seconds"], "arches": {}}', "fields"),
    (('{"format": "sgl-ci-durations", "kind": "store", "version": 1, "fields": ["seconds", "finished", "run", "rocm", "digest"],'
      ' "arches": {"mi300": {"a.py": {"runs": [[1, "yesterday", "r", "", ""]]}}}}'), "'yesterday' is not a time"),
    (('{"format": "sgl-ci-durations", "kind": "run", "version": 1, "run": {"id": "1", "arch": "mi300", '
      '"finished": "2026-08-30T00:00:00Z"}, "units": [{"name": "a.py", "outcome": "exploded", "seconds": 1}]}'), "outcome"),
])
def test_corrupt_input_is_one_clear_error(text, wanted):
    with pytest.raises(DurationsError, match=wanted) as caught:
        parse_durations(text, "store.json", HISTORY.max_store_bytes)
    assert "\n" not in str(caught.value)


def test_oversized_files_are_refused_unread():
    with pytest.raises(DurationsError, match="over the 10 bytes"):
        parse_durations('{"a.py": 1.0}', "s", 10)


def test_a_missing_or_corrupt_store_is_a_warning_for_the_route_and_an_error_when_named(tmp_path):
    missing = tmp_path / "none.json"
    used, warning = read_durations_or_warn(missing, HISTORY)
    assert not used and "not found: partitions from est_time" in warning
    (tmp_path / "bad.json").write_text("{")
    used, warning = read_durations_or_warn(tmp_path / "bad.json", HISTORY)
    assert not used and "not JSON" in warning
    with pytest.raises(DurationsError, match="cannot read it"):
        read_durations(missing, HISTORY)
    (tmp_path / "old.json").write_text('{"a.py": 12.5}')  # the flat file of earlier runs still reads
    assert read_durations(tmp_path / "old.json", HISTORY).for_arch("mi300", HISTORY) == {"a.py": 12.5}


JSONISH = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
                       lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                       max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(data=JSONISH, kind=st.sampled_from(["store", "run", None]))
def test_any_json_either_reads_or_is_a_durations_error(data, kind):
    if kind and isinstance(data, dict):
        data = {"format": "sgl-ci-durations", "kind": kind, "version": 1, **data}
    try:
        parse_durations(json.dumps(data), "x", HISTORY.max_store_bytes)
    except DurationsError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(0, 20), st.floats(0, 1e5, allow_nan=False), st.booleans()), max_size=40))
def test_merge_properties(runs):
    """Whatever the order and repetition of records: at most keep_runs per key, none outside the
    window, only passing runs, and merging in two steps equals merging at once."""
    policy = dataclasses.replace(HISTORY, keep_runs=5, window_days=7)
    records = [record(f"r{i}-{d}", T0 - dt.timedelta(days=d), a_py=("passed" if ok else "failed", s))
               for i, (d, s, ok) in enumerate(runs)]
    at_once = merge(EMPTY_STORE, records, T0, policy)
    stepwise = merge(merge(EMPTY_STORE, records[: len(records) // 2], T0, policy), records[len(records) // 2:], T0, policy)
    assert at_once == stepwise
    entry = at_once.entries.get(("mi300", "a.py"))
    wanted = sorted((r for r in zip(records, runs) if r[1][2] and r[1][0] <= 7), key=lambda r: (r[0].finished, f"{r[0].run_id}/{r[0].stage}"),
                    reverse=True)[:5]
    assert (entry.runs if entry else ()) == tuple(Sample(r[1][1], r[0].finished, f"{r[0].run_id}/{r[0].stage}", "rocm700", "sha256:ab")
                                                  for r in wanted)


def store_of(**files: tuple[float, list[float]]) -> Store:
    """name -> (est_time, measured runs) on mi300."""
    entries = {("mi300", name.replace("_py", ".py").replace("__", "::")): Entry(
        "suite-a", est, tuple(Sample(s, T0 - dt.timedelta(hours=i), f"r{i}") for i, s in enumerate(runs)))
        for name, (est, runs) in files.items()}
    return Store(entries, T0)


def test_drift_both_ways_slowest_first_with_a_suggestion():
    store = store_of(slow_py=(600.0, [1300.0, 1000.0, 1100.0]), fast_py=(1000.0, [300.0, 310.0, 320.0]),
                     fine_py=(100.0, [120.0, 130.0, 140.0]), few_py=(10.0, [900.0, 900.0]))
    found = drift(store, T0, HISTORY, DRIFT)
    assert [(d.name, d.measured, d.suggested) for d in found] == [("slow.py", 1300.0, 1300.0), ("fast.py", 320.0, 320.0)]
    assert found[0].ratio == pytest.approx(1300 / 600)
    assert found[0].line() == "slow.py on mi300: measured 1300 s over 3 run(s) against est_time 600 s (2.17x); suggested est_time=1300"
    # a file that ran split is judged on the sum of its classes
    split = store_of(big_py__TestA=(2000.0, [2000.0] * 3), big_py__TestB=(2000.0, [2100.0] * 3))
    (one,) = drift(split, T0, HISTORY, DRIFT, names=["big.py::TestA+TestB"])
    assert (one.name, one.measured, one.est_time, one.suggested) == ("big.py", 4100.0, 2000.0, 4100.0)
    assert drift(store_of(big_py__TestA=(5400.0, [2000.0] * 3), big_py__TestB=(5400.0, [2100.0] * 3)), T0, HISTORY, DRIFT) == []
    assert drift(split, T0, HISTORY, DRIFT, names=["other.py"]) == []


def test_invoke_durations_update_and_report(tmp_path):
    folder = tmp_path / "records"
    for i in range(4):
        part = folder / f"sgl-ci-durations-record-suite-a-{i}" / "stage"
        part.mkdir(parents=True)
        run = record(f"{i}-1", dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=i), slow_py=("passed", 1300.0 + i),
                     fine_py=("passed", 100.0))
        (part / "durations.json").write_text(record_json(run))
    (folder / "junk").mkdir()
    (folder / "junk" / "durations.json").write_text('{"a.py": 1.0}')  # an old flat file: skipped, said
    store = tmp_path / "store.json"
    store.write_text("{corrupt")
    env = base_env(GITHUB_WORKSPACE=str(tmp_path))
    done = run_door("invoke", "durations", "update", "--from", str(folder), "--from", str(tmp_path / "gone"), "--store", str(store), env=env)
    assert done.code == 0, done.err
    assert "warning: store" in done.out and "starting a new store" in done.out
    assert "skipped: record" in done.out and "nothing merged from it" in done.out
    assert "4 record(s) merged; 2 key(s), 8 run(s) across mi300" in done.out
    report = run_door("invoke", "durations", "report", "--store", str(store), env=env)
    assert report.code == 0 and "suite-a on mi300: 1 file(s)" in report.out
    assert "slow.py: measured 1303 s (4 run(s)), est_time 100 s, 13.03x; suggested est_time=1310" in report.out
    summary = tmp_path / "summary.md"
    md = run_door("invoke", "durations", "report", "--store", str(store), "--markdown",
                  env=base_env(GITHUB_WORKSPACE=str(tmp_path), GITHUB_STEP_SUMMARY=str(summary)))
    assert md.code == 0 and "```mermaid\ngantt" in summary.read_text()
    assert "slow.py measured 1303 s :crit, m0, 0, 1303s" in md.out and "fine.py est_time 100 s :e1, 0, 100s" in md.out
    bad = run_door("invoke", "durations", "sideways", env=env)
    assert bad.code == 2 and bad.err.count("\n") == 1 and "allowed: update, report" in bad.err


def test_invoke_durations_without_a_store_or_with_an_empty_from_is_bad_input(tmp_path):
    """An empty store_path (no --store) or an empty --from name: a one-line usage error (exit 2),
    not an AttributeError on None."""
    override = tmp_path / "override.yaml"
    override.write_text("durations:\n  store_path: ''\n")
    env = base_env(GITHUB_WORKSPACE=str(tmp_path), SGL_CI_CONFIG_OVERRIDE=str(override))
    for action in ("report", "update"):
        done = run_door("invoke", "durations", action, *(("--from", str(tmp_path)) if action == "update" else ()), env=env)
        assert done.code == 2 and done.err.count("\n") == 1 and "no store named" in done.err, done.err
    empty = run_door("invoke", "durations", "update", "--from", "", "--store", str(tmp_path / "store.json"),
                     env=base_env(GITHUB_WORKSPACE=str(tmp_path)))
    assert empty.code == 2 and empty.err.count("\n") == 1 and "--from: an empty name" in empty.err, empty.err
    assert not (tmp_path / "store.json").exists()


def test_a_stage_reports_drift_of_its_own_files_from_the_store_plus_this_run():
    from ci.history import drift_markdown, stage_drift, warning_lines

    store = store_of(slow_py=(100.0, [300.0, 310.0]), other_py=(100.0, [900.0, 900.0, 900.0]))
    now = T0 + dt.timedelta(hours=1)
    this_run = RunRecord("9-1", "stage-x-1of2", "mi300", "rocm700", "i", "d", now,
                         (UnitRecord("slow.py", "suite-a", 100.0, "passed", 320.0),))
    found = stage_drift(CONFIG, Durations(store=store), this_run)
    assert [(d.name, d.measured, d.runs) for d in found] == [("slow.py", 320.0, 3)]  # other.py is not this run's
    assert warning_lines(found, True) == [f"::warning title=duration drift::{found[0].line()}"]
    assert warning_lines(found, False)[0].startswith("warning: duration drift: slow.py on mi300")
    assert "| `slow.py` | mi300 | 100 s | 320 s | 3.20x | 3 | 320 |" in drift_markdown(found)
    assert stage_drift(CONFIG, Durations(), this_run) == []  # one run alone is not judged
