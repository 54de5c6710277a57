"""Registries for the tests (ci.sandbox starts them; missing tools skip locally, fail under
CI=true), and small images with layers of chosen sizes built locally with `docker import`."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from ci import sandbox
from ci.sandbox import Registry, free_port  # noqa: F401 (re-exported for the tests)


def registry_binary() -> str:
    path = shutil.which("docker-registry") or shutil.which("registry")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("docker-registry is needed under CI=true (Debian package docker-registry)")
    pytest.skip("no docker-registry binary")


def start_registry(root: Path, user: str | None = None, password: str | None = None) -> Registry:
    registry_binary()
    return sandbox.start_registry(root, user, password)


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
