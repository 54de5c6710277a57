"""How fast the doors open, as ratios against `python3 -c pass` run side by side (this machine is
noisy): `invoke --list`, `invoke --help plan`, `nox -l` (nox reads config to register the stage
sessions) and, with a Docker Engine, `invoke pull-image` of an image already present (its digest
checked against a loopback registry) beside `docker image inspect`, the old script's no-op.
Alternating, median of N runs each.

    .venv/bin/python -m bench.doors_bench [--runs 9] [--no-pull]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

COMMANDS = {
    "python3 -c pass": [sys.executable, "-c", "pass"],
    "invoke --list": [sys.executable, "-m", "invoke", "--list"],
    "invoke --help plan": [sys.executable, "-m", "invoke", "--help", "plan"],
    "nox -l": [sys.executable, "-m", "nox", "-l"],
}


PRESENT = "rocm/sgl-dev:v0.0.0-doors-bench"


@contextlib.contextmanager
def present_image() -> Iterator[dict[str, str]]:
    """A tiny image present locally and in a loopback registry standing in for the public one:
    the environment under which `invoke pull-image --image PRESENT` finds it and checks its digest."""
    import docker

    from tests.support.registry import build_image, start_registry

    client = docker.from_env(timeout=60)
    registry = start_registry(Path(tempfile.mkdtemp(prefix="doors-bench-")) / "public")
    try:
        build_image(client, PRESENT, (4096,), seed=5)
        repository, tag = PRESENT.split(":")
        client.images.get(PRESENT).tag(f"{registry.address}/{repository}", tag)
        for event in client.api.push(f"{registry.address}/{repository}", tag, stream=True, decode=True):
            if "error" in event:
                raise RuntimeError(event["error"])
        yield {**os.environ, "PUBLIC_DOCKER_REGISTRY": registry.address}
    finally:
        registry.stop()
        for name in (PRESENT, f"{registry.address}/{PRESENT}"):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--no-pull", action="store_true", help="skip the pull of a present image (no Docker)")
    args = parser.parse_args()
    commands = {name: (argv, None) for name, argv in COMMANDS.items()}
    with contextlib.ExitStack() as stack:
        if not args.no_pull:
            env = stack.enter_context(present_image())
            commands["docker image inspect"] = (["docker", "image", "inspect", PRESENT], env)
            commands["invoke pull-image (present)"] = ([sys.executable, "-m", "invoke", "pull-image", "--image", PRESENT], env)
        times = run_all(commands, args.runs)
    base = statistics.median(times["python3 -c pass"])
    width = max(map(len, times))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:{width}} median {median:.3f} s  ratio {median / base:.2f}  (+{median - base:.3f} s)")
    return 0


def run_all(commands: dict[str, tuple[list[str], dict[str, str] | None]], runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            times[name].append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    sys.exit(main())
