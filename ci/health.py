"""Runner health inside a stage: the preflight before anything else, the collective smoke test
after the install, and the questions asked when the run ends (was the container lost? is a GPU
stuck busy after a timeout?) that ci.outcome needs to say whose failure it was."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import docker.errors
import requests

from ci import github, registry
from ci.config import ArchSpec, Config
from ci.errors import ToolFailure
from ci.outcome import OUTPUT_NAME, Attempted, Outcome
from ci.preflight import (
    Host,
    PreflightReport,
    owners,
    read_gpu_state,
    run_preflight,
    vram_verdicts,
)


def connect(config: Config) -> tuple[Any, str | None]:
    """(client, None), or (None, why) when no engine answers: the preflight runs either way."""
    try:
        return registry.connect(config.pull.probe_timeout_s), None
    except ToolFailure as exc:
        return None, str(exc)


def engine_host(client: Any, config: Config) -> Host:
    """The preflight's view of this machine, with the engine's: its data root, and the host pids of
    running containers that have GPU devices mapped in (any PID namespace the engine runs)."""
    if client is None:
        return Host()

    def docker_root() -> str | None:
        try:
            return client.info().get("DockerRootDir")
        except (docker.errors.DockerException, requests.RequestException):  # no answer: config's default
            return None

    def engine_holders() -> list[tuple[str, int]]:
        found = []
        try:
            containers = client.containers.list()
        except (docker.errors.DockerException, requests.RequestException):
            return found
        for container in containers:
            devices = (container.attrs.get("HostConfig") or {}).get("Devices") or []
            if not any(str(d.get("PathOnHost", "")).startswith(("/dev/kfd", "/dev/dri", "/dev/nvidia")) for d in devices):
                continue
            try:
                top = container.top(ps_args="-eo pid")
            except (docker.errors.DockerException, requests.RequestException):
                continue  # gone since the listing
            found += [(container.name, int(row[0])) for row in top.get("Processes") or [] if row and str(row[0]).isdigit()]
        return found

    return Host(docker_root=docker_root, engine_holders=engine_holders)


def job_gpus(plan: Any) -> int:
    return max((j.job.gpus for j in plan.jobs), default=1)


def stage_preflight(config: Config, arch: ArchSpec, gpus: int, workspace: str, env: Mapping[str, str], host: Host,
                    out: TextIO) -> PreflightReport:
    with github.group("preflight", env, out):
        report = run_preflight(config, arch, gpus, workspace, env, host)
        for line in report.lines():
            print(line, file=out, flush=True)
    return report


def lost_container(containers: Any) -> str | None:
    """The CI container gone or stopped under the runner: the machine's failure, not the tests'."""
    try:
        found = containers.find()
    except (docker.errors.DockerException, requests.RequestException) as exc:  # the engine went away
        return f"the engine did not answer after the run ({type(exc).__name__})"
    if found is None:
        return f"container {containers.config.name} was lost during the run (removed under the runner)"
    found.reload()
    if found.status != "running":
        code = (found.attrs.get("State") or {}).get("ExitCode")
        return f"container {containers.config.name} was lost during the run ({found.status}, exit code {code})"
    return None


def stuck_gpu(config: Config, host: Host) -> str | None:
    """After a timed-out file: a GPU still busy with nobody holding it is stuck, not slow."""
    state = read_gpu_state(host.run, config.health.tool_timeout_s)
    if not state.vram:
        return None
    limit = config.health.classify.stuck_busy_pct
    health = config.health
    leaked, _ = vram_verdicts(state, health, owners(state, health, host))
    stuck = [v for v in state.vram if v.gpu in leaked and v.used_pct >= limit]
    if not stuck:
        return None
    return "GPU " + ", ".join(f"{v.gpu} ({v.used_pct:.0f} % VRAM)" for v in stuck) + " stayed busy with no process holding it"


def attempted(results: Sequence[Any]) -> list[Attempted]:
    return [Attempted(r.path, r.status, tuple(a.exit_code for a in r.attempts)) for r in results]


def publish(outcome: Outcome, env: Mapping[str, str]) -> bool:
    """The class to $GITHUB_OUTPUT: the workflow retries the stage once when it is infrastructure."""
    return github.write_outputs({OUTPUT_NAME: outcome.failure_class.value}, env)
