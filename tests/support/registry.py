"""Real Docker registries (the Debian `docker-registry` binary) on loopback ports, optionally
with htpasswd auth, and small test images built locally with `docker import` + layers."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def registry_binary() -> str:
    path = shutil.which("docker-registry") or shutil.which("registry")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("docker-registry is needed under CI=true (Debian package docker-registry)")
    pytest.skip("no docker-registry binary")


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
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if user:
        htpasswd = root / "htpasswd"
        # -i: the password comes on stdin, never in argv.
        subprocess.run(["htpasswd", "-ciB", str(htpasswd), user], input=password, text=True, check=True,
                       capture_output=True)
        auth = f"auth:\n  htpasswd:\n    realm: test-registry\n    path: {htpasswd}\n"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog: {disabled: true}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    process = subprocess.Popen([registry_binary(), "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=open(root / "registry.log", "wb"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:  # 401 with auth on: it is up
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"registry on {port} did not start: {(root / 'registry.log').read_text()}")
    return Registry(port, process, root, user)


def _tar_with(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_image(client, reference: str, layer_sizes: tuple[int, ...] = (), seed: int = 0) -> str:
    """A small image: an imported base layer, then one layer of random (incompressible) bytes per size."""
    base = f"sgl-ci-test-base:{seed}"
    try:
        client.images.get(base)
    except Exception:
        client.api.import_image_from_data(_tar_with({"etc/sgl-ci-test": f"seed {seed}\n".encode()}), repository=base.split(":")[0], tag=str(seed))
    if not layer_sizes:
        client.images.get(base).tag(reference)
        return client.images.get(reference).id
    files = {f"blob{i}": os.urandom(size) for i, size in enumerate(layer_sizes)}
    files["Dockerfile"] = (f"FROM {base}\n" + "".join(f"COPY blob{i} /blob{i}\n" for i in range(len(layer_sizes)))).encode()
    context = _tar_with(files)
    image, _ = client.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=reference, rm=True)
    return image.id
