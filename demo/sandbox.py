"""Throwaway parts for the demo and the tests, all on this machine: Docker registries (Debian's
`docker-registry`) on loopback ports, optionally with htpasswd auth, a small Debian image with
Python 3, pip, pytest and PyYAML built once per engine (`debootstrap --variant=minbase`), and
images made from it with a local package pip-installed (no network), as a nightly ships one."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.types import Mount

from ci.errors import ToolFailure

PYTHON_PACKAGES = "python3,python3-pip,python3-pytest,python3-yaml,procps"
# The tag names the package list, so an image built from an older list is never taken for this one.
PYTHON_IMAGE = f"sgl-ci-test/python:bookworm-{hashlib.sha256(PYTHON_PACKAGES.encode()).hexdigest()[:8]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolFailure(f"{tool} not found (Debian package {package}; `bash .ci/run` installs it)")
    return path


@dataclass
class Registry:
    port: int
    process: subprocess.Popen
    root: Path
    user: str | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_registry(root: Path, user: str | None = None, password: str | None = None) -> Registry:
    binary = shutil.which("docker-registry") or need("registry", "docker-registry")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if user:
        htpasswd = root / "htpasswd"
        # -i: the password comes on stdin, never in argv.
        subprocess.run([need("htpasswd", "apache2-utils"), "-ciB", str(htpasswd), user], input=password, text=True,
                       check=True, capture_output=True)
        auth = f"auth:\n  htpasswd:\n    realm: test-registry\n    path: {htpasswd}\n"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog: {disabled: true}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}")
    process = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                               stderr=open(root / "registry.log", "wb"))  # noqa: SIM115 - the registry's log for its life
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return Registry(port, process, root, user)
        except urllib.error.HTTPError:  # 401 with auth on: it is up
            return Registry(port, process, root, user)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise ToolFailure(f"registry on port {port} did not start: {(root / 'registry.log').read_text()}")


def drop_tag(client, repository: str, tag: str) -> None:
    """Remove every local name of repository:tag, registry-prefixed ones included; other tags stay."""
    for image in client.images.list(name=f"*/{repository}") + client.images.list(name=repository):
        for name in image.tags:
            if name.endswith(":" + tag):
                try:
                    client.images.remove(name, force=True)
                except docker.errors.ImageNotFound:  # went with an earlier name of the same image
                    pass


def python_image(client) -> str:
    """A Debian bookworm image with Python 3, pip and pytest, built from its default mirror once."""
    try:
        client.images.get(PYTHON_IMAGE)
        return PYTHON_IMAGE
    except docker.errors.ImageNotFound:
        pass
    debootstrap = need("debootstrap", "debootstrap")
    with tempfile.TemporaryDirectory(prefix="sgl-ci-rootfs-") as root:
        done = subprocess.run([debootstrap, "--variant=minbase", f"--include={PYTHON_PACKAGES}", "bookworm", root],
                              capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise ToolFailure(f"debootstrap failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        repository, tag = PYTHON_IMAGE.split(":")
        client.api.import_image_from_stream(tar.stdout, repository=repository, tag=tag)
        tar.wait()
    return PYTHON_IMAGE


def baked_image(client, base: str, source: Path, repository: str, env: Mapping[str, str],
                labels: Mapping[str, str], timeout_s: float = 300) -> str:
    """`base` with the package at `source` pip-installed (`--no-index`: no network), `env` and
    `labels` set. Named by a hash of all of that, so it is built once and reused."""
    digest = hashlib.sha256(repr((base, sorted(env.items()), sorted(labels.items()))).encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes())
    name = f"{repository}:{digest.hexdigest()[:12]}"
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="sgl-ci-bake-") as copy:
        shutil.copytree(source, copy, dirs_exist_ok=True)  # pip builds in the tree: leave `source` clean
        container = client.containers.run(
            base, ["python3", "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-cache-dir", "/src"],
            detach=True, network_mode="none", environment=dict(env), mounts=[Mount("/src", copy, type="bind")])
        try:
            code = container.wait(timeout=timeout_s)["StatusCode"]
            if code != 0:
                raise ToolFailure(f"baking {source} into {base} failed (exit code {code}): "
                                  f"{container.logs().decode(errors='replace').strip()[-500:]}")
            container.commit(repository=repository, tag=name.split(":")[1],
                             conf={"Env": [f"{k}={v}" for k, v in env.items()], "Labels": dict(labels), "Cmd": None})
        finally:
            container.remove(force=True)
    return name
