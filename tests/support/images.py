"""The test image (demo.sandbox builds it), skipped locally / failed under CI=true when it cannot be."""

from __future__ import annotations

import os
import shutil

import pytest

from demo import sandbox

PYTHON_IMAGE = sandbox.PYTHON_IMAGE


def python_image(client) -> str:
    if shutil.which("debootstrap") is None:
        try:
            client.images.get(PYTHON_IMAGE)
        except Exception:
            message = "debootstrap is needed to build the test image (Debian package debootstrap)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
    return sandbox.python_image(client)


if __name__ == "__main__":  # build ahead of the tests: python -m tests.support.images
    import docker

    print(python_image(docker.from_env(timeout=600)))
