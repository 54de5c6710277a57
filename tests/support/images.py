"""A small Debian image with Python 3, pytest and PyYAML, built locally once per engine:
`debootstrap --variant=minbase` from its default mirror, then `docker import`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker.errors
import pytest

PYTHON_IMAGE = "sgl-ci-test/python:bookworm"
PACKAGES = "python3,python3-pytest,python3-yaml,procps"


def python_image(client) -> str:
    try:
        client.images.get(PYTHON_IMAGE)
        return PYTHON_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        message = "debootstrap is needed to build the test image (Debian package debootstrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="sgl-ci-rootfs-") as root:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", root],
                       check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        client.api.import_image_from_stream(tar.stdout, repository=PYTHON_IMAGE.split(":")[0], tag=PYTHON_IMAGE.split(":")[1])
        tar.wait()
    return PYTHON_IMAGE


if __name__ == "__main__":  # build ahead of the tests: python -m tests.support.images
    print(python_image(docker.from_env(timeout=600)))
