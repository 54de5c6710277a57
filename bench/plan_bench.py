"""Whole-tree plan time against SGLang's own collector, run side by side on the same tree:

`invoke plan --arch A` (every stage: one scan of the tree, validation, budgets, partitions)
against `collect_tests(...)` from SGLang's ci_register.py over the same files, each as a fresh
process (interpreter start-up included on both sides), alternating, median of N runs.

    GITHUB_WORKSPACE=../shared/sglang python -m bench.plan_bench [--runs 5] [--arch mi300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# SGLang's collector, loaded from the tree itself (a baseline to compare with, not our code).
SGLANG_COLLECT = """
import glob, importlib.util, os, sys
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("ci_register", os.path.join(root, "python/sglang/test/ci/ci_register.py"))
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
files = [f for f in glob.glob(os.path.join(root, "test/registered/**/*.py"), recursive=True)
         if os.path.basename(f) not in ("conftest.py", "__init__.py")]
tests = module.collect_tests(files, sanity_check=True)
print(len(tests))
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--arch", default="mi300")
    args = parser.parse_args()
    tree = Path(os.environ.get("GITHUB_WORKSPACE", "../shared/sglang")).resolve()
    env = {**os.environ, "GITHUB_WORKSPACE": str(tree)}
    ours_argv = [sys.executable, "-m", "invoke", "plan", "--arch", args.arch]
    theirs_argv = [sys.executable, "-c", SGLANG_COLLECT, str(tree)]
    ours, theirs = [], []
    for _ in range(args.runs):
        ours.append(timed(ours_argv, env))
        theirs.append(timed(theirs_argv, env))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"processes, median of {args.runs}: invoke plan (every stage, {args.arch}) {a:.3f} s; "
          f"SGLang collect_tests {b:.3f} s; ratio {a / b:.3f}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
