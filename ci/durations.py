"""Measured time, kept: each stage run's record (durations.json), one history store merged from
records, the estimate partitions use (a quantile of recent passing runs), and drift against
est_time. Pure functions over values, plus reading and writing the two JSON formats.

A run record (what one stage run measured; small, versioned):

    {"format": "sgl-ci-durations", "kind": "run", "version": 1,
     "run": {"id": "…", "stage": "…", "arch": "mi300", "rocm": "rocm700", "image": "…", "digest": "sha256:…",
             "finished": "2026-08-30T12:00:00Z"},
     "units": [{"name": "amd/test_x.py", "suite": "…", "est_time": 600, "outcome": "passed", "seconds": 612.3},
               {"name": "amd/test_y.py::TestA+TestB", "suite": "…", "est_time": 5400, "outcome": "passed",
                "seconds": 1230.0, "classes": {"TestA": 610.0, "TestB": 620.0}}]}

The store (every arch's history; keys are files and, for files that ran split, `file::Class`):

    {"format": "sgl-ci-durations", "kind": "store", "version": 1, "updated": "…",
     "fields": ["seconds", "finished", "run", "rocm", "digest"],
     "arches": {"mi300": {"amd/test_x.py": {"suite": "…", "est_time": 600, "runs": [[612.3, "…", "…", "rocm700", "sha256:…"]]}}}}

Only passing runs enter the store; each key keeps its newest `keep_runs` within `window_days`.
The estimate is the `quantile` (nearest rank) of those; a unit with none falls back to its
est_time, then to its suite's mean (ci.plan)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ci.config import DriftPolicy, HistoryPolicy
from ci.errors import UserError
from ci.inputs import InputProblem, read_text
from ci.runner import FileStatus

FORMAT = "sgl-ci-durations"
VERSION = 1
FIELDS = ("seconds", "finished", "run", "rocm", "digest")
RECORD_NAME = "durations.json"
# A unit recorded in a run: every verdict but disabled (a disabled file is not run, so not recorded).
OUTCOMES = tuple(v.value for v in FileStatus if v is not FileStatus.DISABLED)
_EMPTY: Mapping = MappingProxyType({})


class DurationsError(UserError):
    """A store, run record or durations file that cannot be used: one line naming it and why."""


# --- values -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitRecord:
    name: str  # a file under the test root, a shard `file::A+B`, or a command's name
    suite: str
    est_time: float  # the file's est_time (for a shard too): what drift compares with
    outcome: FileStatus  # one of OUTCOMES
    seconds: float  # the passing attempt's time (passed), else the time it took
    classes: Mapping[str, float] = field(default_factory=lambda: _EMPTY)  # a shard's classes -> seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", FileStatus(self.outcome))  # its JSON value is the same status


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    stage: str
    arch: str
    rocm: str
    image: str
    digest: str
    finished: dt.datetime
    units: tuple[UnitRecord, ...]


@dataclass(frozen=True)
class Sample:
    seconds: float
    finished: dt.datetime
    run: str  # run id / stage: the same record merged twice counts once
    rocm: str = ""
    digest: str = ""


@dataclass(frozen=True)
class Entry:
    suite: str
    est_time: float
    runs: tuple[Sample, ...]  # newest first


@dataclass(frozen=True)
class Store:
    entries: Mapping[tuple[str, str], Entry]  # (arch, name) -> history
    updated: dt.datetime | None = None

    def arches(self) -> list[str]:
        return sorted({arch for arch, _ in self.entries})


EMPTY_STORE = Store(MappingProxyType({}))


@dataclass(frozen=True)
class Durations:
    """What partitioning reads: a store (per arch, windowed), or a flat file -> seconds map."""

    store: Store | None = None
    flat: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    source: str = ""

    def for_arch(self, arch: str, policy: HistoryPolicy) -> dict[str, float]:
        """Estimates for one arch, a function of the file alone (windows end at the store's update)."""
        if self.store is None:
            return dict(self.flat)
        return estimates(self.store, arch, None, policy)

    def __bool__(self) -> bool:
        return bool(self.flat) or bool(self.store and self.store.entries)


NO_DURATIONS = Durations()


# --- pure -------------------------------------------------------------------------------------
def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least q of the values at or below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _window(runs: Iterable[Sample], now: dt.datetime, policy: HistoryPolicy) -> tuple[Sample, ...]:
    oldest = now - dt.timedelta(days=policy.window_days)
    kept = sorted((s for s in runs if oldest <= s.finished), key=lambda s: (s.finished, s.run), reverse=True)
    return tuple(kept[:policy.keep_runs])


def record_samples(record: RunRecord) -> list[tuple[str, str, float, Sample]]:
    """(name, suite, est_time, sample) of every passing measurement in a record: a file's own
    time, or for a shard each class's."""
    out = []
    for unit in record.units:
        if unit.outcome is not FileStatus.PASSED:
            continue
        run = f"{record.run_id}/{record.stage}"
        if unit.classes:
            file = unit.name.split("::", 1)[0]
            for cls, seconds in unit.classes.items():
                out.append((f"{file}::{cls}", unit.suite, unit.est_time,
                            Sample(seconds, record.finished, run, record.rocm, record.digest)))
        else:
            out.append((unit.name, unit.suite, unit.est_time, Sample(unit.seconds, record.finished, run, record.rocm,
                                                                      record.digest)))
    return out


def merge(store: Store, records: Iterable[RunRecord], now: dt.datetime, policy: HistoryPolicy) -> Store:
    """The store with every passing measurement of `records` added (once, however often a record is
    merged), each key cut to its newest `keep_runs` within `window_days` of `now`."""
    runs: dict[tuple[str, str], dict[str, Sample]] = defaultdict(dict)
    meta: dict[tuple[str, str], tuple[str, float, dt.datetime]] = {}
    for key, entry in store.entries.items():
        runs[key].update({s.run: s for s in entry.runs})
        newest = max((s.finished for s in entry.runs), default=dt.datetime.min.replace(tzinfo=dt.timezone.utc))
        meta[key] = (entry.suite, entry.est_time, newest)
    for record in sorted(records, key=lambda r: (r.finished, r.run_id, r.stage)):
        for name, suite, est_time, sample in record_samples(record):
            key = (record.arch, name)
            runs[key][sample.run] = sample
            if key not in meta or meta[key][2] <= sample.finished:
                meta[key] = (suite, est_time, sample.finished)  # the newest record says what est_time is now
    entries = {}
    for key in sorted(runs):
        kept = _window(runs[key].values(), now, policy)
        if kept:
            entries[key] = Entry(meta[key][0], meta[key][1], kept)
    return Store(MappingProxyType(entries), now)


def reference_time(store: Store) -> dt.datetime:
    """The "now" a store's windows are measured from: its last update (else its newest run), so
    the same store gives the same estimates to the route job and, hours later, to the stage jobs."""
    if store.updated is not None:
        return store.updated
    return max((s.finished for e in store.entries.values() for s in e.runs),
               default=dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))


def estimates(store: Store, arch: str, now: dt.datetime | None, policy: HistoryPolicy) -> dict[str, float]:
    """name -> the quantile of its recent passing runs on this arch (names with none are absent);
    now=None: from the store's own reference time."""
    now = reference_time(store) if now is None else now
    out = {}
    for (entry_arch, name), entry in store.entries.items():
        if entry_arch == arch:
            kept = _window(entry.runs, now, policy)
            if kept:
                out[name] = quantile([s.seconds for s in kept], policy.quantile)
    return out


@dataclass(frozen=True)
class Drift:
    arch: str
    suite: str
    name: str  # a file (its classes summed when it ran split)
    est_time: float
    measured: float  # the estimate from measurements
    runs: int  # measurements behind it (the fewest of its classes' when split)
    suggested: float  # est_time to write instead

    @property
    def ratio(self) -> float:
        return self.measured / self.est_time if self.est_time else math.inf

    def line(self) -> str:
        return (f"{self.name} on {self.arch}: measured {self.measured:.0f} s over {self.runs} run(s) against est_time "
                f"{self.est_time:g} s ({self.ratio:.2f}x); suggested est_time={self.suggested:g}")


def drift(store: Store, now: dt.datetime, history: HistoryPolicy, policy: DriftPolicy, arch: str | None = None,
          names: Iterable[str] | None = None) -> list[Drift]:
    """Files whose measured estimate is off their est_time by more than the factor (either way),
    slowest first. A file that ran split is judged on the sum of its classes' estimates."""
    wanted = None if names is None else {n.split("::", 1)[0] for n in names}
    grouped: dict[tuple[str, str], list[tuple[Entry, float, int]]] = defaultdict(list)
    for (entry_arch, name), entry in store.entries.items():
        if arch is not None and entry_arch != arch:
            continue
        file = name.split("::", 1)[0]
        if wanted is not None and file not in wanted:
            continue
        kept = _window(entry.runs, now, history)
        if kept:
            grouped[(entry_arch, file)].append((entry, quantile([s.seconds for s in kept], history.quantile), len(kept)))
    found = []
    for (entry_arch, file), parts in grouped.items():
        measured = sum(p[1] for p in parts)
        runs = min(p[2] for p in parts)
        est = parts[0][0].est_time
        if runs < policy.min_runs or est <= 0:
            continue
        ratio = measured / est
        if ratio > policy.factor or ratio < 1 / policy.factor:
            suggested = math.ceil(measured / policy.suggest_round_s) * policy.suggest_round_s
            found.append(Drift(entry_arch, parts[0][0].suite, file, est, measured, runs, suggested))
    return sorted(found, key=lambda d: (-d.measured, d.arch, d.name))


# --- JSON: writing ------------------------------------------------------------------------------
def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_json(record: RunRecord) -> str:
    units = []
    for u in record.units:
        unit = {"name": u.name, "suite": u.suite, "est_time": u.est_time, "outcome": u.outcome.value,
                "seconds": round(u.seconds, 3)}
        if u.classes:
            unit["classes"] = {c: round(s, 3) for c, s in u.classes.items()}
        units.append(unit)
    return json.dumps({"format": FORMAT, "kind": "run", "version": VERSION, "run": {
        "id": record.run_id, "stage": record.stage, "arch": record.arch, "rocm": record.rocm, "image": record.image,
        "digest": record.digest, "finished": _iso(record.finished)}, "units": units}, indent=1) + "\n"


def store_json(store: Store) -> str:
    arches: dict[str, dict] = {}
    for (arch, name), entry in sorted(store.entries.items()):
        arches.setdefault(arch, {})[name] = {
            "suite": entry.suite, "est_time": entry.est_time,
            "runs": [[round(s.seconds, 3), _iso(s.finished), s.run, s.rocm, s.digest] for s in entry.runs]}
    data = {"format": FORMAT, "kind": "store", "version": VERSION,
            "updated": _iso(store.updated) if store.updated else None, "fields": list(FIELDS), "arches": arches}
    # one line per key: small, and a diff of two stores reads per file
    lines = [json.dumps({k: v for k, v in data.items() if k != "arches"})[:-1] + ', "arches": {']
    arch_blocks = []
    for arch, names in arches.items():
        body = ",\n".join(f"  {json.dumps(n)}: {json.dumps(e, separators=(',', ':'))}" for n, e in names.items())
        arch_blocks.append(f" {json.dumps(arch)}: {{\n{body}\n }}")
    return "\n".join(lines) + "\n" + ",\n".join(arch_blocks) + "\n}}\n"


# --- JSON: reading (every problem is one DurationsError line) -----------------------------------
def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise DurationsError(f"{where}: {value!r} is not a number of seconds (finite, >= 0)")
    return float(value)


def _text(value, where: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise DurationsError(f"{where}: expected {'a' if allow_empty else 'a non-empty'} string, got {value!r}")
    return value


def _when(value, where: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(_text(value, where).replace("Z", "+00:00"))
    except ValueError:
        raise DurationsError(f"{where}: {value!r} is not a time (YYYY-MM-DDTHH:MM:SSZ)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise DurationsError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def parse_json(text: str, source: str, max_bytes: int) -> object:
    if len(text) > max_bytes:
        raise DurationsError(f"{source}: {len(text)} bytes, over the {max_bytes} bytes a durations file may have")
    try:
        return json.loads(text, parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DurationsError(f"{source}: not JSON ({getattr(exc, 'msg', 'too deeply nested')})") from None


def _check_header(data: dict, source: str, kind: str) -> None:
    if data.get("format") != FORMAT or data.get("kind") != kind:
        raise DurationsError(f"{source}: not a durations {kind} (format {FORMAT!r}, kind {kind!r})")
    if data.get("version") != VERSION:
        raise DurationsError(f"{source}: version {data.get('version')!r}; this toolkit reads version {VERSION}")


def parse_record(data: object, source: str) -> RunRecord:
    data = _mapping(data, source)
    _check_header(data, source, "run")
    run = _mapping(data.get("run"), f"{source}: run")
    units = data.get("units")
    if not isinstance(units, list):
        raise DurationsError(f"{source}: units: expected a list")
    parsed = []
    for index, unit in enumerate(units):
        where = f"{source}: units[{index}]"
        unit = _mapping(unit, where)
        outcome = unit.get("outcome")
        if outcome not in OUTCOMES:
            raise DurationsError(f"{where}.outcome: {outcome!r} (allowed: {', '.join(OUTCOMES)})")
        classes = {_text(c, f"{where}.classes", allow_empty=False): _number(s, f"{where}.classes.{c}")
                   for c, s in _mapping(unit.get("classes", {}), f"{where}.classes").items()}
        parsed.append(UnitRecord(_text(unit.get("name"), f"{where}.name", False), _text(unit.get("suite", ""), f"{where}.suite"),
                                 _number(unit.get("est_time", 0), f"{where}.est_time"), FileStatus(outcome),
                                 _number(unit.get("seconds"), f"{where}.seconds"), MappingProxyType(classes)))
    return RunRecord(
        run_id=_text(run.get("id"), f"{source}: run.id", False), stage=_text(run.get("stage", ""), f"{source}: run.stage"),
        arch=_text(run.get("arch"), f"{source}: run.arch", False), rocm=_text(run.get("rocm", ""), f"{source}: run.rocm"),
        image=_text(run.get("image", ""), f"{source}: run.image"), digest=_text(run.get("digest", ""), f"{source}: run.digest"),
        finished=_when(run.get("finished"), f"{source}: run.finished"), units=tuple(parsed))


def parse_store(data: object, source: str) -> Store:
    data = _mapping(data, source)
    _check_header(data, source, "store")
    if data.get("fields") != list(FIELDS):
        raise DurationsError(f"{source}: fields {data.get('fields')!r}; expected {list(FIELDS)}")
    entries = {}
    for arch, names in _mapping(data.get("arches"), f"{source}: arches").items():
        for name, entry in _mapping(names, f"{source}: arches.{arch}").items():
            where = f"{source}: arches.{arch}.{name}"
            entry = _mapping(entry, where)
            runs = entry.get("runs")
            if not isinstance(runs, list):
                raise DurationsError(f"{where}.runs: expected a list")
            samples = []
            for index, run in enumerate(runs):
                if not isinstance(run, list) or len(run) != len(FIELDS):
                    raise DurationsError(f"{where}.runs[{index}]: expected [{', '.join(FIELDS)}]")
                samples.append(Sample(_number(run[0], f"{where}.runs[{index}]"), _when(run[1], f"{where}.runs[{index}]"),
                                      _text(run[2], f"{where}.runs[{index}]"), _text(run[3], f"{where}.runs[{index}]"),
                                      _text(run[4], f"{where}.runs[{index}]")))
            entries[(arch, name)] = Entry(_text(entry.get("suite", ""), f"{where}.suite"),
                                          _number(entry.get("est_time", 0), f"{where}.est_time"), tuple(samples))
    updated = data.get("updated")
    return Store(MappingProxyType(entries), _when(updated, f"{source}: updated") if updated is not None else None)


def parse_durations(text: str, source: str, max_bytes: int) -> Durations:
    """A store, a run record (its arch's units) or a flat {file: seconds} map (older runs)."""
    data = parse_json(text, source, max_bytes)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        if data.get("kind") == "run":
            record = parse_record(data, source)
            return Durations(store=merge(EMPTY_STORE, [record], record.finished, _ALL_OF_ONE_RUN), source=source)
        return Durations(store=parse_store(data, source), source=source)
    if not isinstance(data, dict):
        raise DurationsError(f"{source}: expected a durations store, a run record or a JSON object of file -> seconds")
    return Durations(flat=MappingProxyType({str(k): _number(v, f"{source}: {k!r}") for k, v in data.items()}),
                     source=source)


# A lone run record is read as a store holding just that run, whatever its age.
_ALL_OF_ONE_RUN = HistoryPolicy(keep_runs=1, window_days=1e6, quantile=1.0, max_store_bytes=1)


def _read_text(path: Path, what: str, max_bytes: int, shown: str | None = None) -> str:
    """A regular file's text (a FIFO, device or folder is refused, never waited on), capped."""
    try:
        return read_text(path, max_bytes)
    except InputProblem as problem:
        raise DurationsError(f"{what} {shown or path}: cannot read it ({problem})") from None


def read_durations(path: Path, policy: HistoryPolicy, shown: str | None = None) -> Durations:
    """Strict: a file that is missing or cannot be used is a DurationsError (named as `shown`,
    what the person typed, when given)."""
    return parse_durations(_read_text(path, "--durations", policy.max_store_bytes, shown), f"--durations {shown or path}", policy.max_store_bytes)


def read_durations_or_warn(path: Path | None, policy: HistoryPolicy) -> tuple[Durations, str | None]:
    """Lenient (the route job: the store is a cache): missing or corrupt -> (none, the warning)."""
    if path is None:
        return NO_DURATIONS, None
    if not path.exists():
        return NO_DURATIONS, f"durations store {path} not found: partitions from est_time"
    try:
        return read_durations(path, policy), None
    except DurationsError as exc:
        return NO_DURATIONS, f"{exc}: partitions from est_time"


def read_store(path: Path, policy: HistoryPolicy) -> Store:
    return parse_store(parse_json(_read_text(path, "store", policy.max_store_bytes), f"store {path}", policy.max_store_bytes), f"store {path}")


def find_records(folders: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Every durations.json under the folders (artifact downloads nest them), in a stable order;
    a folder that is not there is a warning (a run whose stage jobs uploaded nothing)."""
    found, warnings = [], []
    for folder in folders:
        if folder.is_file():
            found.append(folder)
        elif folder.is_dir():
            found += sorted(p for p in folder.rglob(RECORD_NAME) if p.is_file())
        else:
            warnings.append(f"--from {folder}: no such file or folder: nothing merged from it")
    return found, warnings


def read_records(paths: Iterable[Path], policy: HistoryPolicy) -> tuple[list[RunRecord], list[str]]:
    """(records, warnings): a record that cannot be read is skipped with a warning, never fatal."""
    records, warnings = [], []
    for path in paths:
        try:
            data = parse_json(_read_text(path, "record", policy.max_store_bytes), f"record {path}", policy.max_store_bytes)
            records.append(parse_record(data, f"record {path}"))
        except DurationsError as exc:
            warnings.append(f"skipped: {exc}")
    return records, warnings


def with_record(durations: Durations, record: RunRecord, now: dt.datetime, policy: HistoryPolicy) -> Store:
    """The history a stage judges drift on: the store it was given plus what it just measured."""
    return merge(durations.store or EMPTY_STORE, [record], now, policy)


def replace_units(record: RunRecord, units: Sequence[UnitRecord]) -> RunRecord:
    return dataclasses.replace(record, units=tuple(units))
