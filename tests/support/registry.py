"""Registries for the tests (demo.sandbox starts them; missing tools skip locally, fail under
CI=true), small images with layers of chosen sizes built locally with `docker import`, and tags
written straight through the registry's HTTP API (`push_tags`, no Docker Engine)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.parse
from pathlib import Path

import pytest

from demo import sandbox
from demo.sandbox import Registry, free_port  # noqa: F401 (re-exported for the tests)


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


# --- tags over the Registry HTTP API (no Docker Engine) ------------------------------------------
SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"


def _upload_blob(session, base: str, repository: str, data: bytes) -> str:
    """A monolithic upload: POST opens the session, PUT with ?digest= closes it with the bytes."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    opened = session.post(f"{base}/v2/{repository}/blobs/uploads/", timeout=10)
    assert opened.status_code == 202, (opened.status_code, opened.text)
    location = urllib.parse.urljoin(base, opened.headers["Location"])
    closed = session.put(location, params={"digest": digest}, data=data, timeout=10,
                         headers={"Content-Type": "application/octet-stream"})
    assert closed.status_code == 201, (closed.status_code, closed.text)
    return digest


def push_random_image(registry: Registry, repository: str, tag: str, layer_sizes: tuple[int, ...], seed: int) -> tuple[str, int]:
    """An image of random (incompressible, seeded) layers of the given sizes, written straight
    through the registry's HTTP API; (manifest digest, download size). Writes to several
    registries with the same seed give the same digest."""
    import random

    import requests

    session = requests.Session()
    base = f"http://{registry.address}"
    rng = random.Random(seed)
    layers, diff_ids = [], []
    for index, size in enumerate(layer_sizes):
        tar = _tar_with({f"blob{index}": rng.randbytes(size)})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        blob = gzip.compress(tar, compresslevel=1, mtime=0)
        layers.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(blob),
                       "digest": _upload_blob(session, base, repository, blob)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": SCHEMA2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": _upload_blob(session, base, repository, config)},
        "layers": layers,
    }).encode()
    put = session.put(f"{base}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": SCHEMA2}, timeout=30)
    assert put.status_code == 201, (put.status_code, put.text)
    return put.headers["Docker-Content-Digest"], len(config) + sum(layer["size"] for layer in layers)


def push_tags(registry: Registry, repository: str, tags, user: str | None = None, password: str | None = None) -> str:
    """Give every tag in `tags` one tiny image (a 1-file layer and its config), written straight
    through the registry's HTTP API; returns the manifest digest all of them point to."""
    import requests  # the docker SDK's dependency; only the registry tests need it here

    session = requests.Session()
    if user:
        session.auth = (user, password)
    base = f"http://{registry.address}"
    layer = gzip.compress(_tar_with({"etc/sgl-ci-tag": b"tag list test\n"}), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": SCHEMA2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": _upload_blob(session, base, repository, config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                    "digest": _upload_blob(session, base, repository, layer)}],
    }).encode()
    digest = None
    for tag in tags:
        put = session.put(f"{base}/v2/{repository}/manifests/{tag}", data=manifest, headers={"Content-Type": SCHEMA2},
                          timeout=10)
        assert put.status_code == 201, (tag, put.status_code, put.text)
        digest = put.headers.get("Docker-Content-Digest")
    return digest
