"""Fan-out: N runners pull the same nightly at once. N Docker Engines of our own (separate dockerd
processes, data roots and sockets), a LAN mirror behind proxies that share one total bandwidth
among all connections, and a public stand-in whose rate is per connection (a CDN does not
saturate). Each scenario runs pull-image, then the old script (the LAN once with no bound, then
`docker pull` from public retried with 30-300 s backoff), side by side in one run.

    python -m bench.fanout_bench [--engines 6] [--mib 48] [--record-traces DIR]

Needs dockerd and docker-registry (see .ci/run); root. Loopback only."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker

from ci import pull
from ci.config import load_config
from ci.images import ImageName
from ci.pull import Puller
from demo.sandbox import Registry, drop_tag, start_registry
from tests.support.engines import Engine, engines
from tests.support.faultproxy import Fault, FaultProxy, SharedBandwidth
from tests.support.registry import push_random_image

MIB = 1048576
TAG = "v0.0.0-fanout"
IMAGE = ImageName("rocm/sgl-dev", TAG)
# The bench's own policy (every number the pull uses is config): seconds where CI has minutes.
LAN = {"first_progress_s": 3, "window_s": 4, "budget_s": 20, "public_bytes_per_s": 12 * MIB, "faster_by": 2,
       "hold_s": 2, "jitter_s": 4}
HOST = {"public_slots": 3, "slot_poll_s": 0.2, "rates_kept": 5}
PUBLIC_PER_CONNECTION = 4 * MIB  # 3 layers at once: 12 MiB/s a job, whatever the number of jobs
OLD_BACKOFF = (30, 300)  # the old script: 30 s doubling to 300 s between `docker pull` attempts


@dataclass(frozen=True)
class Scenario:
    name: str
    lan_bytes_per_s: float  # shared by all connections of all jobs
    stalled_jobs: frozenset[int] = frozenset()  # these jobs' mirror connections stall mid-way
    stall_after_mib: float = 8
    placement: tuple[int, ...] = ()  # the engine of each job; empty: job i on engine i

    def fault(self, job: int) -> Fault:
        if job in self.stalled_jobs:
            return Fault(mode="stall", stall_after_bytes=int(self.stall_after_mib * MIB))
        return Fault()


@dataclass
class Job:
    seconds: float | None = None  # time-to-image; None: no image
    source: str = ""
    failure: str = ""
    waited_s: float = 0.0
    public_started: float | None = None  # time.monotonic() when its public pull began


class StampedPuller(Puller):
    """pull-image's Puller, noting when the public pull begins (for the stalled goal)."""

    public_started: float | None = None

    def retried_public_pull(self, public: ImageName) -> int:
        self.public_started = time.monotonic()
        return super().retried_public_pull(public)


@dataclass
class Run:
    jobs: list[Job]
    lan_bytes: int
    public_bytes: int
    public_requests: dict[str, int]
    stalled_at: list[float | None]  # per job: when its mirror connections stalled
    started: float | None = None  # time.monotonic() when the jobs were let go

    @property
    def times(self) -> list[float]:
        return [job.seconds for job in self.jobs if job.seconds is not None]

    def line(self, label: str) -> str:
        times = self.times
        spread = (f"min {min(times):6.1f}  median {statistics.median(times):6.1f}  max {max(times):6.1f} s"
                  if times else "no job got the image")
        sources = {s: sum(j.source == s for j in self.jobs) for s in ("lan", "public", "local")}
        failed = sum(job.seconds is None for job in self.jobs)
        return (f"  {label:<10} {spread}  lan {self.lan_bytes / MIB:6.1f} MiB  public {self.public_bytes / MIB:6.1f} MiB  "
                f"public requests {self.public_requests['manifests']} manifest / {self.public_requests['blobs']} blob  "
                f"sources {sources['lan']} lan / {sources['public']} public  failed {failed}")


@dataclass
class Recorder:
    """Replaces ci.pull's Watchdog for the bench: the same decisions, with every observation and
    verdict kept, so a run's traces can be replayed by tests/test_pull_pace.py."""

    traces: list[dict] = field(default_factory=list)

    def watchdog(self) -> type:
        recorder = self

        class Recording(pull.Watchdog):
            def __post_init__(self) -> None:
                super().__post_init__()
                self.trace: dict = {"idle_s": self.idle_s, "window_s": self.window_s, "points": [], "verdicts": [],
                                    "budget": vars(self.budget).copy() if self.budget else None}
                recorder.traces.append(self.trace)

            def observe(self, now, done_bytes, downloaded=None, total=None):
                self.trace["points"].append((now - self.started, done_bytes, downloaded, total))
                super().observe(now, done_bytes, downloaded, total)

            def verdict(self, now):
                found = super().verdict(now)
                self.trace["verdicts"].append(found.leave.value if found else None)
                return found

        return Recording


def clear(clients: list[docker.DockerClient]) -> None:
    for client in clients:
        drop_tag(client, "rocm/sgl-dev", TAG)
        client.images.prune(filters={"dangling": False})


def new_puller(client: docker.DockerClient, override: Path, lan: str, public: str, seed: int) -> StampedPuller:
    """Made before the jobs are let go: loading config (about 0.2 s) is the tool's start, not its pull."""
    env = {"SGL_CI_CONFIG_OVERRIDE": str(override), "LOCAL_DOCKER_REGISTRY": lan, "PUBLIC_DOCKER_REGISTRY": public}
    return StampedPuller(load_config(env=env), client, env, io.StringIO(), io.StringIO(), rng=random.Random(seed))


def new_pull(puller: StampedPuller) -> Job:
    started = time.monotonic()
    outcome = puller.pull(IMAGE)
    return Job(time.monotonic() - started, str(outcome.source), "", outcome.waited_s, puller.public_started)


def old_pull(client: docker.DockerClient, lan: str, public: str, stop: threading.Event) -> Job:
    """The old script: the LAN once (no bound), then `docker pull` from public with backoff."""
    started = time.monotonic()

    def bare(registry: str) -> None:
        for event in client.api.pull(f"{registry}/rocm/sgl-dev", TAG, stream=True, decode=True):
            if "error" in event:
                raise RuntimeError(event["error"])

    with contextlib.suppress(Exception):
        bare(lan)
        return Job(time.monotonic() - started, "lan")
    wait = OLD_BACKOFF[0]
    for _ in range(6):
        try:
            bare(public)
            return Job(time.monotonic() - started, "public")
        except Exception as exc:  # any failure: the old script retried them all
            failure = str(exc)
        if stop.wait(wait):
            break
        wait = min(wait * 2, OLD_BACKOFF[1])
    return Job(None, "", failure)


def run(scenario: Scenario, mode: str, n: int, lan: Registry, public: Registry, root: Path, cutoff_s: float) -> Run:
    """One scenario, one mode, on fresh engines and a fresh host state: a pull left hanging by
    the previous run (the old script's, on a stalled mirror) must not poison this one."""
    with engines(n) as running:
        return _run(scenario, mode, running, lan, public, write_override(root / f"{scenario.name}-{mode}"), cutoff_s)


def _run(scenario: Scenario, mode: str, running: list[Engine], lan: Registry, public: Registry, override: Path,
         cutoff_s: float) -> Run:
    placement = scenario.placement or tuple(range(len(running)))
    clients = [running[engine].client(120) for engine in placement]
    clear(clients)
    shared = SharedBandwidth(scenario.lan_bytes_per_s)
    mirrors = [FaultProxy(lan.port, scenario.fault(i), shared=shared) for i in range(len(placement))]
    front = FaultProxy(public.port, Fault(mode="throttle", bytes_per_s=PUBLIC_PER_CONNECTION))
    jobs = [Job(failure=f"no image after the {cutoff_s:g} s cutoff") for _ in placement]
    start, stop = threading.Barrier(len(placement)), threading.Event()

    let_go: list[float] = []

    pullers = [new_puller(clients[i], override, mirrors[i].address, front.address, seed=i) for i in range(len(placement))]

    def job(i: int) -> None:
        if start.wait() == 0:
            let_go.append(time.monotonic())
        try:
            if mode == "new":
                jobs[i] = new_pull(pullers[i])
            else:
                jobs[i] = old_pull(clients[i], mirrors[i].address, front.address, stop)
        except Exception as exc:  # a job that failed is a figure, not a crash of the bench
            if not stop.is_set():
                jobs[i] = Job(None, "", f"{exc.__class__.__name__}: {exc}")

    threads = [threading.Thread(target=job, args=(i,), daemon=True) for i in range(len(placement))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + cutoff_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    result = Run(list(jobs), sum(m.downstream_bytes for m in mirrors), front.downstream_bytes, dict(front.requests),
                 [m.stalled_at for m in mirrors], let_go[0] if let_go else None)
    for proxy in [*mirrors, front]:
        proxy.close()  # ends a hung pull (the old script's), and frees the engine's transfers
    for thread in threads:
        thread.join(10)
    return result


@contextlib.contextmanager
def registries(root: Path, mib: int) -> Iterator[tuple[Registry, Registry, int]]:
    lan, public = start_registry(root / "lan"), start_registry(root / "public")
    try:
        layer = mib * MIB // 3
        sizes = {push_random_image(r, "rocm/sgl-dev", TAG, (layer, layer, layer), seed=5) for r in (lan, public)}
        assert len(sizes) == 1, sizes  # the same digest on both
        yield lan, public, sizes.pop()[1]
    finally:
        lan.stop()
        public.stop()


def write_override(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    override = root / "override.yaml"
    override.write_text(json.dumps({"pull": {"lan": LAN, "host": {**HOST, "state_dir": str(root / "state")},
                                             "progress_log_interval_s": 3600}}))
    return override


def goals(scenario: Scenario, new: Run, old: Run, n: int, public_pull_s: float, ratio: float) -> list[str]:
    """The issue's goals for this scenario, each with its verdict."""
    said = []
    failed = sum(job.seconds is None for job in new.jobs)
    said.append(f"no job failed: {'met' if failed == 0 else f'NOT met ({failed})'}")
    pulls = sum(job.source == "public" for job in new.jobs)
    said.append(f"public pulls {pulls} <= N = {n}: {'met' if pulls <= n else 'NOT met'}")
    times = new.times
    if scenario.placement:
        said.append(f"one engine, {len(scenario.placement)} jobs: from the mirror {new.lan_bytes / MIB:.1f} MiB with the lock, "
                    f"{old.lan_bytes / MIB:.1f} MiB with the daemon's own de-duplication; sources "
                    f"{', '.join(j.source for j in new.jobs)}; waited for another pull "
                    f"{', '.join(f'{j.waited_s:.1f}' for j in new.jobs)} s")
    elif scenario.name.startswith("healthy"):
        said.append(f"0 fallbacks: {'met' if pulls == 0 else f'NOT met ({pulls})'}; median of the rounds' medians new/old = {ratio:.3f} "
                    f"({'met' if ratio <= 1.10 else 'NOT met'}: within 10 %)")
    elif scenario.name.startswith("saturated"):
        bound = LAN["budget_s"] + public_pull_s
        said.append(f"max time-to-image {max(times):.1f} s <= budget {LAN['budget_s']} s + one public pull "
                    f"{public_pull_s:.1f} s = {bound:.1f} s: {'met' if max(times) <= bound else 'NOT met'}")
    else:
        # Per stalled job: from the stall to its public pull's start (the deadline), then that
        # pull itself (slower here than alone: three engines extract at once on two cores).
        for i in sorted(scenario.stalled_jobs):
            job, stalled = new.jobs[i], new.stalled_at[i]
            if job.seconds is None or job.public_started is None or stalled is None:
                said.append(f"job {i}: {'no image' if job.seconds is None else 'no public pull'}: NOT met")
                continue
            waited = job.public_started - stalled
            said.append(f"job {i}: stall -> public pull {waited:.1f} s (deadline {LAN['first_progress_s']} s: "
                        f"{'met' if waited <= LAN['first_progress_s'] + 1 else 'NOT met'}, 1 s slack), public pull "
                        f"{job.seconds - (job.public_started - (new.started or 0)):.1f} s")
    return said


def single_pull(front: FaultProxy) -> float:
    """One job alone pulling through `front` (a bare SDK pull, on an engine of its own): the yardsticks."""
    with engines(1) as running:
        return _single_pull(running[0].client(120), front)


def _single_pull(client: docker.DockerClient, front: FaultProxy) -> float:
    clear([client])
    try:
        started = time.monotonic()
        for event in client.api.pull(f"{front.address}/rocm/sgl-dev", TAG, stream=True, decode=True):
            assert "error" not in event, event
        return time.monotonic() - started
    finally:
        front.close()
        clear([client])


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engines", type=int, default=6)
    parser.add_argument("--mib", type=int, default=48, help="image size in MiB (3 layers)")
    parser.add_argument("--healthy-mib-s", type=float, default=36, help="the mirror's total rate, healthy")
    parser.add_argument("--saturated-mib-s", type=float, default=6, help="the mirror's total rate, saturated")
    parser.add_argument("--cutoff", type=float, default=90, help="a job with no image by then has failed")
    parser.add_argument("--record-traces", type=Path, help="write each new pull's watchdog trace here (JSON)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of the healthy case")
    parser.add_argument("--only", help="run only the scenario whose name starts with this")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the engines are stopped on a TERM too
    n = args.engines
    recorder = Recorder()
    if args.record_traces:
        pull.Watchdog = recorder.watchdog()  # type: ignore[misc]  # the bench's recording stand-in
    scenarios = [
        Scenario("healthy-but-shared", args.healthy_mib_s * MIB),
        Scenario("saturated", args.saturated_mib_s * MIB),
        Scenario("stalled-half", args.healthy_mib_s * MIB, frozenset(range(0, n, 2))),
        # Several jobs of one host, one engine: the lock against the daemon's own de-duplication
        Scenario("one-engine", args.healthy_mib_s * MIB, placement=(0, 0, 0)),
    ]
    root = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, True)
        lan, public, size = cleanup.enter_context(registries(root, args.mib))
        public_s = single_pull(FaultProxy(public.port, Fault(mode="throttle", bytes_per_s=PUBLIC_PER_CONNECTION)))
        single_s = single_pull(FaultProxy(lan.port, shared=SharedBandwidth(args.healthy_mib_s * MIB)))
        out(f"{n} engines, image {size / MIB:.1f} MiB (3 layers), LAN mirror {args.healthy_mib_s:g} MiB/s shared "
            f"(saturated: {args.saturated_mib_s:g}), public {PUBLIC_PER_CONNECTION / MIB:g} MiB/s a connection")
        out(f"policy: deadline {LAN['first_progress_s']} s, budget {LAN['budget_s']} s over a {LAN['window_s']} s window, "
            f"hold {LAN['hold_s']} s + 0..{LAN['jitter_s']} s jitter, public estimate {LAN['public_bytes_per_s'] / MIB:g} MiB/s, "
            f"faster_by {LAN['faster_by']}, {HOST['public_slots']} public slots on the host")
        out(f"one job alone: LAN {single_s:.1f} s (N x = {n * single_s:.1f} s), public {public_s:.1f} s")
        for scenario in scenarios:
            if args.only and not scenario.name.startswith(args.only):
                continue
            out(f"{scenario.name}:")
            # The healthy case is judged on a 10 % margin: alternate rounds, compare medians of medians.
            news, olds = [], []
            for round_ in range(args.repeats if scenario.name.startswith("healthy") else 1):
                first = len(recorder.traces)
                news.append(run(scenario, "new", n, lan, public, root / str(round_), args.cutoff))
                out(news[-1].line("pull-image"))
                if args.record_traces and round_ == 0:
                    save_traces(args.record_traces, scenario.name, recorder.traces[first:], news[-1])
                olds.append(run(scenario, "old", n, lan, public, root / str(round_), args.cutoff))
                out(olds[-1].line("old script"))
            new, old = news[0], olds[0]
            ratio = statistics.median(statistics.median(r.times or [math.inf]) for r in news) / \
                statistics.median(statistics.median(r.times or [math.inf]) for r in olds)
            for line in goals(scenario, new, old, n, public_s, ratio):
                out(f"    {line}")
            waited = [job.waited_s for job in new.jobs]
            if not scenario.placement:
                out(f"    waited for another pull: max {max(waited):.1f} s (one job per engine: expected 0)")
    return 0


def save_traces(folder: Path, scenario: str, traces: list[dict], new: Run) -> None:
    """One file per LAN attempt: its points, its budget, when (if) it left and why."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, trace in enumerate(t for t in traces if t["budget"]):  # LAN attempts; public ones have none
        # The pull left at its last verdict when that one said to (stalled, or over budget with a slot).
        decision = trace["verdicts"][-1] if trace["verdicts"] else None
        points = trace["points"]
        data = {"scenario": scenario, "idle_s": trace["idle_s"], "window_s": trace["window_s"], "budget": trace["budget"],
                "points": points, "decision": decision,
                "decided_at": points[-1][0] if decision else None,
                "slot_free_from": points[-1][0] if decision == "over-budget" else None}
        (folder / f"{scenario}-{index}.json").write_text(json.dumps(data))


if __name__ == "__main__":
    sys.exit(main())
