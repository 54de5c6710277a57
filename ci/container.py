"""The CI container: its run arguments built from config (pure), and the adapter that starts it,
runs commands in it with the CI env, and always stops it: on success, failure, timeout, SIGINT
and SIGTERM (SIGINT to its processes first, then `stop` with a grace period, then kill)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import docker
import docker.errors
from docker.types import Mount, Ulimit

from ci import github, procs
from ci.config import ARCH_ENV, TOOLKIT_SOURCE, WORKSPACE_SOURCE, ArchSpec, ContainerConfig, DeviceSpec, MountSpec
from ci.errors import ExitCodeUnknown, Terminated, ToolFailure, sigterm_raises
from ci.secrets import ByteSink, ScrubbingSink, exec_secrets
from ci.toolkit import exposed_by, toolkit_home

TOOLKIT = toolkit_home()  # the installed toolkit (outside every read-write mount), mounted read-only
LABEL = "sgl-ci"


@dataclass(frozen=True)
class HostView:
    """What this host has, so the spec can be built (and tested) without touching the host."""

    env: Mapping[str, str] = field(repr=False)  # the host's environment: may hold secrets
    exists: Callable[[str], bool] = os.path.exists
    read_text: Callable[[str], str | None] = lambda path: Path(path).read_text() if os.path.isfile(path) else None
    toolkit: str = str(TOOLKIT)

    @property
    def workspace(self) -> str:
        return str(github.workspace(self.env))


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]
    devices: tuple[str, ...]  # host:container:permissions
    mounts: tuple[MountSpec, ...]  # sources resolved
    env: Mapping[str, str] = field(repr=False)  # never secret (secrets go to each exec), but an environment
    secret_names: tuple[str, ...]  # given to each exec from the host env by name, never stored in the container
    group_add: tuple[str, ...]
    cap_add: tuple[str, ...]
    security_opt: tuple[str, ...]
    ulimits: Mapping[str, tuple[int, int]]
    shm_size: str
    network: str
    ipc: str | None
    privileged: bool
    init: bool
    user: str
    workdir: str
    labels: Mapping[str, str]
    left_out: tuple[str, ...] = ()  # optional devices/mounts this host lacks

    def run_kwargs(self) -> dict[str, Any]:
        """The engine's arguments. No secret: what is here, `docker inspect` shows to anyone."""
        return {
            "image": self.image,
            "command": list(self.command),
            "name": self.name,
            "detach": True,
            "tty": True,
            "devices": list(self.devices),
            "mounts": [Mount(m.target, m.source, type="bind", read_only=m.read_only) for m in self.mounts],
            "environment": dict(self.env),
            "group_add": list(self.group_add),
            "cap_add": list(self.cap_add),
            "security_opt": list(self.security_opt),
            "ulimits": [Ulimit(name=n, soft=s, hard=h) for n, (s, h) in self.ulimits.items()],
            "shm_size": self.shm_size,
            "network_mode": self.network,
            "ipc_mode": self.ipc,
            "privileged": self.privileged,
            "init": self.init,
            "user": self.user,
            "working_dir": self.workdir,
            "labels": dict(self.labels),
        }

    def describe(self) -> list[str]:
        """What a person may see: everything but secret values."""
        lines = [f"container {self.name} from {self.image}",
                 f"  devices: {', '.join(d.split(':')[0] for d in self.devices) or '(none)'}",
                 f"  mounts: {', '.join(f'{m.source} -> {m.target}' + (' (ro)' if m.read_only else '') for m in self.mounts)}",
                 f"  groups: {', '.join(self.group_add)}; caps: {', '.join(self.cap_add)}; shm {self.shm_size}; "
                 f"network {self.network}{'; ipc ' + self.ipc if self.ipc else ''}{'; privileged' if self.privileged else ''}",
                 f"  env: {', '.join(sorted(self.env))}" + (f"; secrets by name: {', '.join(self.secret_names)}" if self.secret_names else "")]
        lines += [f"  left out (optional, missing here): {item}" for item in self.left_out]
        return lines


def render_devices(text: str) -> list[str]:
    """Device paths from the pod's render-devices file ("--device=/dev/dri/renderD128 ..." or paths)."""
    found = []
    for token in text.replace(",", " ").split():
        path = token.split("=", 1)[-1]
        if path.startswith("/dev/") and path not in found:
            found.append(path)
    return found


def build_spec(config: ContainerConfig, arch: ArchSpec, variant: str, image: str, host: HostView) -> ContainerSpec:
    """Everything `docker run` gets, from config and what this host has (pure given `host`)."""
    extra = config.variant(variant)
    left_out: list[str] = []

    wanted = list(config.devices)
    listed = host.read_text(config.render_devices_file) if config.render_devices_file else None
    if listed and render_devices(listed):
        wanted += [DeviceSpec(path) for path in render_devices(listed)]
    elif config.render_devices_fallback:
        wanted.append(config.render_devices_fallback)
    wanted += list(extra.devices)
    devices = []
    for device in wanted:
        if host.exists(device.path):
            devices.append(f"{device.path}:{device.path}:rwm")
        elif device.optional:
            left_out.append(f"device {device.path}")
        else:
            raise ToolFailure(f"required device {device.path} is missing on this host "
                              f"(config/container.yaml can mark it optional for a box without a GPU)")

    mounts = []
    for mount in (*config.mounts, *extra.mounts):
        source = {WORKSPACE_SOURCE: host.workspace, TOOLKIT_SOURCE: host.toolkit}.get(mount.source, mount.source)
        if host.exists(source):
            mounts.append(MountSpec(source, mount.target, mount.read_only, mount.optional))
        elif mount.optional:
            left_out.append(f"mount {source}")
        else:
            raise ToolFailure(f"required mount source {source} is missing on this host")

    exposed = exposed_by(mounts, Path(host.toolkit))
    if exposed:  # nothing the container can write may be run on the host afterwards
        raise ToolFailure(f"{exposed[0]} is inside the read-write mount {exposed[1]}: code under test could rewrite "
                          "what the host runs next; install the toolkit outside it (ci/setup_toolkit.py, as CI does)")
    env = {**config.base_env, **arch.env, ARCH_ENV: arch.name}
    return ContainerSpec(
        name=config.name,
        image=image,
        command=config.command,
        devices=tuple(devices),
        mounts=tuple(mounts),
        env=env,
        secret_names=tuple(n for n in config.secret_env if host.env.get(n)),
        group_add=tuple(dict.fromkeys((*config.group_add, *extra.group_add))),
        cap_add=tuple(dict.fromkeys((*config.cap_add, *extra.cap_add))),
        security_opt=config.security_opt,
        ulimits={**config.ulimits, **extra.ulimits},
        shm_size=config.shm_size,
        network=extra.network or config.network,
        ipc=extra.ipc,
        privileged=extra.privileged,
        init=config.init,
        user=config.user,
        workdir=config.workdir,
        labels={LABEL: "1", f"{LABEL}.arch": arch.name, f"{LABEL}.variant": variant},
        left_out=tuple(left_out),
    )


@dataclass(frozen=True)
class ExecOutcome:
    exit_code: int
    timed_out: bool = False




@dataclass
class Containers:
    """The Docker adapter for the CI container."""

    client: docker.DockerClient
    config: ContainerConfig
    out: TextIO = field(default_factory=lambda: sys.stdout)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # host env: secret_env values for each exec
    clock: Callable[[], float] = time.monotonic  # the waits for an exec's exit code (tests pass their own)
    sleep: Callable[[float], None] = time.sleep

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def find(self, name: str | None = None):
        try:
            return self.client.containers.get(name or self.config.name)
        except docker.errors.NotFound:
            return None

    def start(self, spec: ContainerSpec, secrets: Mapping[str, str]):
        """Start the container; `secrets` (the host env) are kept for its execs, never given to it."""
        self.secrets = secrets
        old = self.find(spec.name)
        if old is not None:
            self.say(f"removing container {old.name} ({old.short_id}, {old.status}) left by an earlier run")
            self.stop(old.name)
        for line in spec.describe():
            self.say(line)
        try:
            container = self.client.containers.run(**spec.run_kwargs())
        except docker.errors.ImageNotFound:
            raise ToolFailure(f"image {spec.image} is not present locally: run `invoke pull-image` first") from None
        except docker.errors.APIError as exc:
            leftover = self.find(spec.name)  # created but not started: leave nothing half-done
            if leftover is not None:
                leftover.remove(force=True)
            raise ToolFailure(f"could not start {spec.name}: {exc.explanation}") from None
        self.say(f"started {container.name} ({container.short_id})")
        return container

    def stop(self, name: str | None = None) -> bool:
        """SIGINT to the container's work processes, wait, then `stop` (TERM, KILL), then remove."""
        container = self.find(name)
        if container is None:
            return False
        container.reload()
        if container.status == "running":
            work = self._work_processes(container)
            if work:
                self.say(f"SIGINT to {len(work)} process(es) in {container.name}")
                for pid in work:
                    procs.send(pid, signal.SIGINT)
                procs.wait_gone(work, self.config.stop.sigint_grace_s)
            container.stop(timeout=int(self.config.stop.stop_timeout_s))
        container.remove(force=True)
        self.say(f"stopped and removed {container.name}")
        return True

    def _work_processes(self, container) -> list[int]:
        """Host pids of what runs in the container besides its init and the keep-alive command."""
        try:
            top = container.top(ps_args="-eo pid,ppid")
        except docker.errors.APIError:
            return []
        init_pid = int(container.attrs["State"]["Pid"])
        rows = [dict(zip(top["Titles"], row)) for row in top.get("Processes") or []]
        return [int(r["PID"]) for r in rows if int(r["PID"]) != init_pid and int(r["PPID"]) != init_pid]

    @contextlib.contextmanager
    def running(self, spec: ContainerSpec, secrets: Mapping[str, str]) -> Iterator[Any]:
        """Start; whatever happens inside (return, exception, SIGINT, SIGTERM), stop."""
        with sigterm_raises():
            container = None
            try:
                container = self.start(spec, secrets)
                yield container
            finally:
                if container is not None:
                    self.stop(spec.name)

    def exec(self, argv: Sequence[str], env: Mapping[str, str], workdir: str, sink: ByteSink | None = None) -> int:
        """Run argv in the container, streaming its output live; returns its exit code. An
        interrupt (SIGINT/SIGTERM) reaches the command as SIGINT, then SIGKILL after the grace."""
        return self.run_exec(argv, env, workdir, sink).exit_code

    def run_exec(self, argv: Sequence[str], env: Mapping[str, str], workdir: str, sink: ByteSink | None = None,
                 timeout_s: float | None = None) -> ExecOutcome:
        """`exec`, with an optional timeout: past it the command's process tree gets SIGINT, then
        SIGKILL after the grace, and the outcome says it timed out. Secrets (config secret_env) go
        into this exec's environment only, never the container's config; its output is scrubbed of
        them. An exit code that is unknown or not yet there after the wait raises ExitCodeUnknown:
        never 0."""
        container = self.find()
        if container is None:
            raise ToolFailure(f"no container {self.config.name}: run `invoke start-container` first")
        api = self.client.api
        given = exec_secrets(self.config.secret_env, self.secrets)
        exec_id = api.exec_create(container.id, list(argv), environment={**env, **given}, workdir=workdir)["Id"]
        scrubbed = ScrubbingSink(sink or sys.stdout.buffer, given.values())
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self._interrupt_exec(exec_id, whole_tree=True)

        timer = threading.Timer(timeout_s, expire) if timeout_s is not None else None
        with sigterm_raises():
            try:
                stream = api.exec_start(exec_id, stream=True)
                if timer is not None:
                    timer.daemon = True
                    timer.start()
                for chunk in stream:
                    scrubbed.write(chunk)
                    scrubbed.flush()
            except (KeyboardInterrupt, Terminated):
                self._interrupt_exec(exec_id)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                scrubbed.close()
        info: Mapping[str, Any] = api.exec_inspect(exec_id)
        recorded_by = self.clock() + self.config.exec.exit_code_wait_s
        while info.get("Running") and self.clock() < recorded_by:  # the stream can end before the code is recorded
            self.sleep(self.config.exec.exit_code_poll_s)
            info = api.exec_inspect(exec_id)
        return ExecOutcome(exit_code_of(info, argv, container.name), expired.is_set())

    def _interrupt_exec(self, exec_id: str, whole_tree: bool = False) -> None:
        """SIGINT to the exec'd process (to everything below it too for a timeout), SIGKILL to what
        is left after the grace. An interrupt leaves the children to the process (the runner
        reports what it killed); a timeout leaves nothing that could hold the output open."""
        pid = int(self.client.api.exec_inspect(exec_id).get("Pid") or 0)
        if pid <= 0:
            return
        # No wait after the SIGKILL: the exec's own wait (the engine's record) says when it ended.
        procs.stop({pid}, self.config.stop.sigint_grace_s, 0, first=signal.SIGINT,
                   rescan=(lambda: procs.descendants(pid)) if whole_tree else None)


def exit_code_of(info: Mapping[str, Any], argv: Sequence[str], where: str) -> int:
    """The exit code from the engine's exec record; unknown or still running is a failure."""
    code = info.get("ExitCode")
    if info.get("Running") or isinstance(code, bool) or not isinstance(code, int):
        state = "still running after the wait" if info.get("Running") else f"exit code {code!r}"
        raise ExitCodeUnknown(f"`{argv[0] if argv else '?'}` in {where}: {state}: its result is unknown, counted as failed")
    return code


def exec_env(config: ContainerConfig, arch: ArchSpec) -> dict[str, str]:
    return {**config.exec.env, **arch.env, ARCH_ENV: arch.name}


def exec_with_retry(containers: Containers, arch: ArchSpec, argv: Sequence[str], sink: ByteSink | None = None) -> int:
    """`invoke exec`: the CI env, and one retry with HF_HUB_OFFLINE=1 unless config says not."""
    spec = containers.config.exec
    env = exec_env(containers.config, arch)
    code = containers.exec(argv, env, spec.workdir, sink)
    if spec.offline_retry and code not in spec.no_retry_exit_codes:
        containers.say(f"exit code {code}: retrying once with HF_HUB_OFFLINE=1")
        code = containers.exec(argv, {**env, "HF_HUB_OFFLINE": "1"}, spec.workdir, sink)
    return code
