"""Partitions on SGLang's real tree, ours against SGLang's own LPT, and the cost of the history.

1. Every AMD suite of config (registered files; suites made of commands are left out), on its
   first arch, at its configured count (auto: the count our plan picks from est_time): makespan /
   max(total / N, longest unsplittable unit) for SGLang's `auto_partition` (loaded from the tree,
   whole files) and for ours (LPT + local search, long files split by test class), and our
   makespan against theirs.
2. stage-c-test-large-8-gpu-amd at 4 partitions with a generated duration history (below): our
   makespan against total / N, and against SGLang's LPT on the same history (per-file p90s).
3. `durations update` over 200 run records, and the route job's partition computation on a store
   of every per-commit suite, each against a baseline (json.load of the same records; the same
   computation on est_time alone).

The history: each class of a file gets the file's est_time shared by its test count, times a
per-class factor (lognormal, sigma 0.25: some classes launch bigger servers), the file as a whole
drifting from its est_time by a lognormal factor (sigma 0.2); 16 runs a class, each with run noise
(lognormal, sigma 0.08), within the last 7 days; a file that runs whole is measured as the sum of
its classes. Seeded: the same figures every run.

    GITHUB_WORKSPACE=../shared/sglang python -m bench.durations_bench [--seed 11]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from ci import history
from ci.config import load_config
from ci.durations import (
    EMPTY_STORE,
    Durations,
    RunRecord,
    UnitRecord,
    estimates,
    merge,
    record_json,
)
from ci.plan import load_tree, plan_job
from ci.shards import discover_file
from ci.suites import select

NOW = dt.datetime(2026, 8, 30, 12, tzinfo=dt.timezone.utc)


def sglang_lpt(tree: Path):
    path = tree / "python" / "sglang" / "test" / "ci" / "ci_register.py"
    spec = importlib.util.spec_from_file_location("sglang_ci_register", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.auto_partition


def theirs(auto_partition, seconds: dict[str, float], n: int) -> list[float]:
    files = [SimpleNamespace(filename=name, est_time=s) for name, s in seconds.items()]
    return [sum(seconds[f.filename] for f in auto_partition(files, rank, n)) for rank in range(n)]


def ratio(loads: list[float], units: list[float], n: int) -> float:
    bound = max(sum(units) / n, max(units, default=0.0))
    return max(loads) / bound if bound else 1.0


def table(config, tree, scan, auto_partition) -> list[str]:
    rows = ["| suite | arch | N | files | total s | SGLang LPT: makespan / bound | ours: makespan / bound | shards | ours / SGLang makespan |",
            "|---|---|---|---|---|---|---|---|---|"]
    single = 0
    for stage in config.stages.values():
        for job in stage.suites:
            if config.suites.commands.get(job.suite):
                continue
            arch = config.arch(job.arches[0])
            run, disabled = select(scan.files, job.suite, stage.nightly)
            if not run:
                continue
            problems: list[str] = []
            ours = plan_job(config, stage, job, arch, run, disabled, {}, problems, scan.root)
            n = ours.total
            est = {f.path: f.est_time for f in run}
            their_loads = theirs(auto_partition, est, n)
            units = [u.seconds for u in ours.units.values()]
            our_loads = list(ours.partitioning.totals)
            shards = sum(1 for u in ours.units.values() if u.selectors)
            if n == 1 and not shards:
                single += 1  # one partition is its own bound: 1.000 on both sides
                continue
            rows.append(f"| {job.suite} | {arch.name} | {n}{' (auto)' if ours.auto else ''} | {len(run)} | {sum(est.values()):.0f} | "
                        f"{max(their_loads):.0f} s: {ratio(their_loads, list(est.values()), n):.3f} | "
                        f"{max(our_loads):.0f} s: {ratio(our_loads, units, n):.3f} | {shards or ''} | "
                        f"{max(our_loads) / max(their_loads):.3f} |")
    return [*rows, "", f"({single} more suites run as one partition: 1.000 on both sides, not listed.)"]


def classes_of(config, scan, path: str, style: str):
    policy = config.durations.splitting
    file = scan.root / path
    workspace = scan.root.parents[len(Path(config.suites.test_root).parts) - 1]
    found = discover_file(file, file.stat().st_mtime_ns, style, tuple(policy.testcase_bases),
                          tuple(workspace / r for r in policy.import_roots), "")
    return found


def history_for(config, scan, suite: str, stage_nightly: bool, arch: str, rng: random.Random, runs: int = 16):
    """Run records of `runs` runs of a suite: per class for files that split, per file otherwise."""
    run, _ = select(scan.files, suite, stage_nightly)
    truth: dict[str, dict[str, float] | float] = {}
    for f in run:
        drift = math.exp(rng.gauss(0, 0.2))
        found = classes_of(config, scan, f.path, f.style)
        if found.splittable:
            tests = sum(c.tests for c in found.classes)
            raw = {c.name: f.est_time * c.tests / tests * math.exp(rng.gauss(0, 0.25)) for c in found.classes}
            scale = f.est_time * drift / sum(raw.values())
            truth[f.path] = {c: s * scale for c, s in raw.items()}
        else:
            truth[f.path] = f.est_time * drift
    records = []
    for r in range(runs):
        when = NOW - dt.timedelta(hours=10 * r)
        units = []
        for path, t in truth.items():
            if isinstance(t, dict):
                for cls, s in t.items():
                    seconds = s * math.exp(rng.gauss(0, 0.08))
                    units.append(UnitRecord(f"{path}::{cls}", suite, 0.0, "passed", seconds, {cls: seconds}))
            else:
                units.append(UnitRecord(path, suite, 0.0, "passed", t * math.exp(rng.gauss(0, 0.08))))
        records.append(RunRecord(f"{r}-1", f"{suite}-{r}", arch, "rocm700", "img", "sha256:0", when, tuple(units)))
    return records, truth


def stage_c_history(config, scan, auto_partition, seed: int) -> list[str]:
    stage = config.stage("stage-c")
    job = stage.job("stage-c-test-large-8-gpu-amd")
    arch = config.arch("mi300")
    rng = random.Random(seed)
    records, truth = history_for(config, scan, job.suite, stage.nightly, arch.name, rng)
    store = merge(EMPTY_STORE, records, NOW, config.durations.history)
    measured = estimates(store, arch.name, None, config.durations.history)
    run, disabled = select(scan.files, job.suite, stage.nightly)
    problems: list[str] = []
    ours = plan_job(config, stage, job, arch, run, disabled, measured, problems, scan.root)
    n = ours.total
    our_loads = list(ours.partitioning.totals)
    total = sum(u.seconds for u in ours.units.values())
    # SGLang's model on the same history: per-file p90 of whole-file times (the sum of its classes)
    per_file: dict[str, list[float]] = {}
    for rec in records:
        sums: dict[str, float] = {}
        for u in rec.units:
            sums[u.name.split("::")[0]] = sums.get(u.name.split("::")[0], 0.0) + u.seconds
        for name, s in sums.items():
            per_file.setdefault(name, []).append(s)
    file_p90 = {name: sorted(v)[math.ceil(0.9 * len(v)) - 1] for name, v in per_file.items()}
    their_loads = theirs(auto_partition, file_p90, n)
    # one more run, drawn like the others, run on both partitionings (shards pay their process start)
    actual = {}
    for path, t in truth.items():
        actual[path] = ({c: s * math.exp(rng.gauss(0, 0.08)) for c, s in t.items()} if isinstance(t, dict)
                        else t * math.exp(rng.gauss(0, 0.08)))

    def real(unit_name: str, selectors) -> float:
        t = actual[unit_name.split("::")[0]]
        if selectors:
            return sum(t[c] for c in selectors) + config.durations.splitting.shard_overhead_s
        return sum(t.values()) if isinstance(t, dict) else t

    our_real = [sum(real(i.name, ours.units[i.name].selectors) for i in part) for part in ours.partitioning.parts]
    names = {f.filename: f for f in [SimpleNamespace(filename=k, est_time=v) for k, v in file_p90.items()]}
    their_real = [sum(real(f.filename, ()) for f in auto_partition(list(names.values()), rank, n)) for rank in range(n)]
    shards = [u.name for u in ours.units.values() if u.selectors]
    return [
        (f"stage-c-test-large-8-gpu-amd, mi300, {n} partitions, history of {len(records)} runs (seed {seed}): "
        f"{len(shards)} shard(s) of {len({s.split('::')[0] for s in shards})} file(s)"),
        "",
        "| | ours (split by class, p90 per class) | SGLang LPT (p90 per file) |",
        "|---|---|---|",
        f"| planned makespan | {max(our_loads):.0f} s | {max(their_loads):.0f} s |",
        f"| total / N (own estimates) | {total / n:.0f} s | {sum(file_p90.values()) / n:.0f} s |",
        f"| planned makespan / (total / N) | {max(our_loads) / (total / n):.3f} | {max(their_loads) / (sum(file_p90.values()) / n):.3f} |",
        f"| a further run, drawn the same way: makespan | {max(our_real):.0f} s | {max(their_real):.0f} s |",
        f"| ... / (its total / N) | {max(our_real) / (sum(our_real) / n):.3f} | {max(their_real) / (sum(their_real) / n):.3f} |",
        f"| ours / SGLang, that run | {max(our_real) / max(their_real):.3f} | |",
    ]


def timings(config, scan, tree_tuple, seed: int) -> list[str]:
    rng = random.Random(seed)
    per_commit = [(s, j) for s in config.stages.values() if s.cadence == "per-commit" for j in s.suites
                  if not config.suites.commands.get(j.suite)]
    # 200 records: partitions of the per-commit suites on mi300/mi325/mi355, over a week
    records = []
    while len(records) < 200:
        for stage, job in per_commit:
            run, _ = select(scan.files, job.suite, stage.nightly)
            if not run or len(records) >= 200:
                continue
            arch = job.arches[len(records) % len(job.arches)]
            limit = job.per_file_timeout_for(arch)  # a run past it was killed: never a passing record
            units = tuple(UnitRecord(f.path, job.suite, f.est_time, "passed",
                                     min(f.est_time * math.exp(rng.gauss(0, 0.2)), limit)) for f in run)
            records.append(RunRecord(f"{len(records)}-1", job.suite, arch, "rocm700", "img", "sha256:0",
                                     NOW - dt.timedelta(minutes=50 * len(records)), units))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "records")
        for i, rec in enumerate(records):
            (folder / str(i)).mkdir(parents=True)
            (folder / str(i) / "durations.json").write_text(record_json(rec))
        units = sum(len(r.units) for r in records)

        def baseline_load():
            for p in sorted(folder.rglob("durations.json")):
                json.loads(p.read_text())

        def update():
            Path(tmp, "store.json").unlink(missing_ok=True)
            with open(os.devnull, "w") as sink:
                history.update(config, [folder], Path(tmp, "store.json"), NOW, sink)

        base = median_time(baseline_load)
        ours = median_time(update)
        store_text = Path(tmp, "store.json").read_text()
    store = merge(EMPTY_STORE, records, NOW, config.durations.history)
    durations = Durations(store=store)
    from ci.commands import _partition_counts

    arches = [config.arch("mi300"), config.arch("mi355")]
    stages = [s for s in config.stages.values() if s.cadence == "per-commit"]
    with_store = median_time(lambda: _partition_counts(config, arches, stages, tree_tuple, durations))
    without = median_time(lambda: _partition_counts(config, arches, stages, tree_tuple, Durations()))
    return [
        "| measure | ours | baseline | ratio |",
        "|---|---|---|---|",
        (f"| durations update: 200 records ({units} unit runs) into a new store ({len(store_text) // 1024} KiB) | "
        f"{ours:.3f} s | json.load of the records {base:.3f} s | {ours / base:.1f} |"),
        (f"| route partition computation, every per-commit job (mi300 + mi355), on that store | {with_store:.3f} s | "
        f"on est_time alone {without:.3f} s | {with_store / without:.2f} |"),
    ]


def median_time(func, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    tree = Path(os.environ.get("GITHUB_WORKSPACE", "../shared/sglang")).resolve()
    config = load_config()
    tree_tuple = load_tree(config, tree / config.suites.test_root)
    scan = tree_tuple[0]
    auto_partition = sglang_lpt(tree)
    print("\n".join(table(config, tree, scan, auto_partition)))
    print()
    print("\n".join(stage_c_history(config, scan, auto_partition, args.seed)))
    print()
    print("\n".join(timings(config, scan, tree_tuple, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
