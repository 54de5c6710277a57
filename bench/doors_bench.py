"""How fast the doors open, as ratios against `python3 -c pass` run side by side (this machine is
noisy): `invoke --list`, `invoke --help plan` and `nox -l` (nox reads config to register the stage
sessions), alternating, median of N runs each.

    python -m bench.doors_bench [--runs 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python3 -c pass": [sys.executable, "-c", "pass"],
    "invoke --list": [sys.executable, "-m", "invoke", "--list"],
    "invoke --help plan": [sys.executable, "-m", "invoke", "--help", "plan"],
    "nox -l": [sys.executable, "-m", "nox", "-l"],
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python3 -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:22} median {median:.3f} s  ratio {median / base:.2f}  (+{median - base:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
