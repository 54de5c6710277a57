"""Stage runner figures, printed as ratios against baselines run side by side:

1. orchestration overhead per file: ci.runner against running the same files directly
   (`python3 FILE -f`, one after another), alternating, median of N runs;
2. time from a file's deadline to a dead process tree (a parent and children ignoring SIGTERM);
3. partition makespan against the lower bound max(longest, total/N), and against greedy LPT, on a
   realistic est_time set shaped like SGLang's stage-b (110 files, ~259 min, 14 partitions).

    python -m bench.stage_bench [--runs 5] [--files 20]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ci.config import load_config
from ci.partition import Item, Partitioning, lpt, partition
from ci.runner import PlannedFile, RunPlan, run_plan
from ci.stage import file_runs

RUNS = file_runs(load_config(env={}))  # config/runner.yaml, as a stage passes it to the runner

# A file that does ~0.5 s of real work, like a short unittest module.
WORK = ("import time, unittest\nclass T(unittest.TestCase):\n    def test_work(self):\n"
        "        end = time.monotonic() + 0.5\n        while time.monotonic() < end:\n            sum(range(1000))\n"
        "unittest.main()\n")
FORKER = ("import os, signal, time\nfor _ in range(4):\n    if os.fork() == 0:\n        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "        time.sleep(600)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)\n")


def overhead(runs: int, count: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="stage-bench-"))
    names = [f"test_{i:02}.py" for i in range(count)]
    for name in names:
        (root / name).write_text(WORK)
    plan = RunPlan("bench", str(root), str(root / "reports"), tuple(PlannedFile(n, 1) for n in names), 60, 3600, RUNS, 1.0)
    direct, ours = [], []
    for _ in range(runs):
        started = time.monotonic()
        for name in names:
            subprocess.run([sys.executable, name, "-f"], cwd=root, capture_output=True, check=True)
        direct.append(time.monotonic() - started)
        started = time.monotonic()
        results = run_plan(plan, io.StringIO())
        ours.append(time.monotonic() - started)
        assert all(r.status == "passed" for r in results)
    d, o = statistics.median(direct), statistics.median(ours)
    print(f"1. {count} files of ~0.5 s, median of {runs} alternating runs")
    print(f"   direct  {d:.3f} s   runner {o:.3f} s   ratio {o / d:.4f}  "
          f"(overhead {100 * (o / d - 1):+.2f} %, {1000 * (o - d) / count:+.1f} ms per file; target < 3 %)")


def kill_latency(runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="stage-bench-kill-"))
    (root / "forker.py").write_text(FORKER)
    timeout = 1.0
    plan = RunPlan("bench", str(root), str(root / "reports"), (PlannedFile("forker.py", 1),), timeout, 3600, RUNS, 1.0)
    latencies = []
    for _ in range(runs):
        started = time.monotonic()
        (result,) = run_plan(plan, io.StringIO())
        latencies.append(time.monotonic() - started - timeout)
        assert result.status == "timeout"
    print(f"2. deadline -> dead tree (parent + 4 children ignoring SIGTERM), {runs} runs: "
          f"median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s (target < 2 s)")


def makespan() -> None:
    rng = random.Random(23156)
    # ~110 files, ~259 min: many short files, a tail of long ones (SGLang's stage-b shape).
    est = [rng.choice([30, 45, 60, 90, 120, 150]) for _ in range(80)] + [rng.choice([200, 300, 400, 600]) for _ in range(24)] \
        + [900, 1100, 1300, 1500, 1800, 2000]
    scale = 259 * 60 / sum(est)
    items = [Item(f"test_{i:03}.py", round(s * scale, 1)) for i, s in enumerate(est)]
    for n in (4, 14):
        ours, greedy = partition(items, n), Partitioning(tuple(tuple(p) for p in lpt(items, n)))
        print(f"3. {len(items)} files, {sum(i.seconds for i in items) / 60:.0f} min, {n} partitions: makespan "
              f"{ours.makespan:.0f} s, lower bound {ours.lower_bound:.0f} s, ratio {ours.makespan / ours.lower_bound:.4f}; "
              f"LPT {greedy.makespan:.0f} s (ratio {greedy.makespan / ours.lower_bound:.4f})")


def main() -> int:
    parser = argparse.ArgumentParser(description="stage runner benchmark")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=20)
    args = parser.parse_args()
    overhead(args.runs, args.files)
    kill_latency(args.runs)
    makespan()
    return 0


if __name__ == "__main__":
    sys.exit(main())
