"""Time-to-image with the LAN mirror healthy, refused, hung, stalled and throttled, against a bare
SDK pull of the same image, side by side in one run (this machine is noisy: read the ratios).

    python -m bench.pull_bench [--runs 5] [--mib 64]

Needs a Docker Engine and the docker-registry binary (see .ci/run). Loopback only."""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker

from ci.config import load_config
from ci.images import ImageName
from ci.pull import Puller
from ci.registry import connect
from demo.sandbox import drop_tag
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.registry import build_image, start_registry

TAG = "v0.0.0-bench"
IMAGE = ImageName("rocm/sgl-dev", TAG)
POLICY = {"first_progress_s": 3, "window_s": 5, "budget_s": 8, "hold_s": 0, "jitter_s": 0}


def drop_local(client: docker.DockerClient) -> None:
    drop_tag(client, "rocm/sgl-dev", TAG)


def bare_pull(client: docker.DockerClient, registry: str) -> float:
    started = time.monotonic()
    for event in client.api.pull(f"{registry}/rocm/sgl-dev", TAG, stream=True, decode=True):
        if "error" in event:
            raise RuntimeError(event["error"])
    return time.monotonic() - started


def tool_pull(override: Path, lan: str, public: str) -> tuple[float, str]:
    env = {"SGL_CI_CONFIG_OVERRIDE": str(override), "LOCAL_DOCKER_REGISTRY": lan, "PUBLIC_DOCKER_REGISTRY": public}
    puller = Puller(load_config(env=env), connect(30), env, io.StringIO(), io.StringIO())
    started = time.monotonic()
    outcome = puller.pull(IMAGE)
    return time.monotonic() - started, outcome.source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64, help="image size in MiB (3 layers)")
    args = parser.parse_args()
    client = docker.from_env(timeout=60)
    root = Path(tempfile.mkdtemp(prefix="pull-bench-"))
    lan, public = start_registry(root / "lan"), start_registry(root / "public")
    try:
        layer = args.mib * 1048576 // 3
        build_image(client, "sgl-ci-bench/source:1", (layer, layer, layer), seed=11)
        for registry in (lan, public):
            client.images.get("sgl-ci-bench/source:1").tag(f"{registry.address}/rocm/sgl-dev", TAG)
            for event in client.api.push(f"{registry.address}/rocm/sgl-dev", TAG, stream=True, decode=True):
                assert "error" not in event, event
        drop_local(client)
        client.images.remove("sgl-ci-bench/source:1")
        override = root / "override.yaml"
        override.write_text("pull:\n  lan: {first_progress_s: %(first_progress_s)s, window_s: %(window_s)s, "
                            "budget_s: %(budget_s)s, hold_s: %(hold_s)s, jitter_s: %(jitter_s)s}\n"
                            "  host: {state_dir: %(state)s}\n  progress_log_interval_s: 3600\n" % {**POLICY, "state": root / "state"})

        print(f"healthy LAN pull of a {args.mib} MiB image, {args.runs} runs each, alternating")
        bare, ours = [], []
        for _ in range(args.runs):
            drop_local(client)
            bare.append(bare_pull(client, lan.address))
            drop_local(client)
            seconds, source = tool_pull(override, lan.address, public.address)
            assert source == "lan", source
            ours.append(seconds)
        b, o = statistics.median(bare), statistics.median(ours)
        print(f"  bare SDK pull   median {b:.3f} s  (runs: {', '.join(f'{x:.2f}' for x in bare)})")
        print(f"  pull-image      median {o:.3f} s  (runs: {', '.join(f'{x:.2f}' for x in ours)})")
        print(f"  ratio pull-image / bare = {o / b:.3f}  (overhead {100 * (o / b - 1):+.1f} %, target < +5 %)")

        print("faulty LAN mirror -> public fallback (deadline %(first_progress_s)ss, budget %(budget_s)ss judged over %(window_s)ss)" % POLICY)
        drop_local(client)
        baseline = bare_pull(client, public.address)  # what the fallback itself costs
        faults = {
            "refused": (None, 0.0),
            "hung": (Fault(mode="hang"), POLICY["first_progress_s"]),
            "stalled mid-layer": (Fault(mode="stall", stall_after_bytes=layer // 2), POLICY["first_progress_s"]),
            "throttled 1 MiB/s": (Fault(mode="throttle", bytes_per_s=1048576), POLICY["window_s"]),  # past the budget
        }
        worst = 0.0
        for name, (fault, bound) in faults.items():
            drop_local(client)
            proxy = FaultProxy(lan.port, fault) if fault else None
            try:
                seconds, source = tool_pull(override, proxy.address if proxy else "127.0.0.1:9", public.address)
            finally:
                if proxy:
                    proxy.close()
            excess = seconds - baseline - bound
            worst = max(worst, excess)
            print(f"  {name:<18} time-to-image {seconds:6.2f} s = bound {bound:g} s + public pull {baseline:.2f} s "
                  f"{excess:+.2f} s  (source={source}; target: within 2 s)")
        print(f"worst excess over the configured bound: {worst:+.2f} s")
    finally:
        drop_local(client)
        lan.stop()
        public.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
