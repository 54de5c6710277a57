"""Docker Engines of our own for fan-out tests and benches: separate dockerd processes, each with
its own data root, exec root, socket and pidfile under one temporary folder, no bridge, no
iptables. Stopped (TERM, wait, KILL) by `close`, also when starting one of them failed."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker


@dataclass
class Engine:
    index: int
    root: Path
    process: subprocess.Popen

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def stop(self, grace_s: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _start(index: int, root: Path) -> Engine:
    root.mkdir(parents=True)
    argv = [shutil.which("dockerd") or "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "-H", f"unix://{root / 'docker.sock'}",
            "--pidfile", str(root / "docker.pid"), "--log-level", "error"]
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - the engine's log for its life
    return Engine(index, root, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))


def _wait_ready(engine: Engine, deadline: float) -> None:
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            raise RuntimeError(f"dockerd {engine.index} exited: {(engine.root / 'dockerd.log').read_text()[-2000:]}")
        if engine.socket.exists():
            with contextlib.suppress(Exception):
                engine.client(5).ping()
                return
        time.sleep(0.1)
    raise RuntimeError(f"dockerd {engine.index} did not answer: {(engine.root / 'dockerd.log').read_text()[-2000:]}")


@contextlib.contextmanager
def engines(count: int, start_timeout_s: float = 60) -> Iterator[list[Engine]]:
    """`count` engines of our own, started together; all stopped and their folder removed after.
    The folder is short (/tmp/sgl-eng-XXXX): a Unix socket path must fit in 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="sgl-eng-", dir="/tmp"))
    started: list[Engine] = []
    try:
        for index in range(count):
            started.append(_start(index, root / str(index)))
        deadline = time.monotonic() + start_timeout_s
        for engine in started:
            _wait_ready(engine, deadline)
        yield started
    finally:
        for engine in started:
            if engine.process.poll() is None:
                engine.process.send_signal(signal.SIGTERM)
        for engine in started:
            engine.stop()
        # Layers extracted by an engine may be mounted or busy for a moment after it exits.
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False, capture_output=True)
