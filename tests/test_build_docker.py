"""The nightly publish for real: `invoke build-image` builds SGLang's Dockerfile (a small stand-in)
with the arch's build args, pushes it to the (loopback, authenticated) public registry and
outputs its name; `invoke mirror-image` then finds today's tag and mirrors it to the LAN."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from ci.config import load_config
from ci.images import nightly_tag
from ci.install import source_fingerprint
from demo.sandbox import drop_tag
from tests.conftest import base_env, run_door
from tests.support.images import python_image
from tests.support.registry import start_registry

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]
USER, TOKEN = "nightly-bot", "canary-build-93b1"


def _checkout_with_release_tags(workspace: Path, tags: tuple[str, ...]) -> None:
    """The workspace as a shallow CI checkout: no tags of its own, an origin (on disk) that has them."""
    env = {**base_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    origin = workspace.parent / f"{workspace.name}-origin"
    origin.mkdir()
    for argv in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "release"], *(["tag", t] for t in tags)):
        subprocess.run(["git", *argv], cwd=origin, env=env, check=True, capture_output=True)
    for argv in (["init", "-q"], ["remote", "add", "origin", str(origin)]):
        subprocess.run(["git", *argv], cwd=workspace, env=env, check=True, capture_output=True)


def test_build_push_then_mirror(docker, tmp_path):
    base = python_image(docker)
    _checkout_with_release_tags(tmp_path, ("v0.5.9", "v0.5.10rc1", "v0.5.10", "gateway-v9.9.9"))
    (tmp_path / "docker").mkdir()
    kernel = tmp_path / "python" / "sglang" / "kernels" / "aot"
    kernel.mkdir(parents=True)
    (kernel / "topk_sigmoid.hip").write_text("__global__ void topk_sigmoid() {}\n")
    (tmp_path / "docker" / "rocm.Dockerfile").write_text(f"FROM {base}\nARG GPU_ARCH\nARG ROCM_VERSION\n"
                                                         "LABEL gpu_arch=$GPU_ARCH rocm=$ROCM_VERSION\n")
    public = start_registry(tmp_path / "public", user=USER, password=TOKEN)
    lan = start_registry(tmp_path / "lan")
    today = dt.datetime.now(dt.timezone.utc).date()
    shipped = load_config(env={})
    tag = nightly_tag(shipped.images, "v0.5.10", "rocm720", shipped.arch("mi355").image_arch, today)
    try:
        output = tmp_path / "github_output"
        env = base_env(GITHUB_WORKSPACE=str(tmp_path), PUBLIC_DOCKER_REGISTRY=public.address, GITHUB_OUTPUT=str(output),
                       DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=TOKEN)
        built = run_door("invoke", "build-image", "--arch", "mi355", "--rocm", "rocm720", env=env)
        assert built.code == 0, built.out + built.err
        assert "version v0.5.10: the newest release tag of origin (git ls-remote)" in built.out
        assert "GPU_ARCH=gfx950" in built.out and f"pushed {public.address}/rocm/sgl-dev:{tag} digest=sha256:" in built.out
        assert output.read_text().strip() == f"image=rocm/sgl-dev:{tag}"
        labels = docker.images.get(f"rocm/sgl-dev:{tag}").labels
        assert labels["gpu_arch"] == "gfx950"
        # What a job compares its checkout's kernel sources with, to skip an unchanged kernel build.
        assert labels["sgl-ci.kernel-sources"] == source_fingerprint(tmp_path, ["python/sglang/kernels/aot"])
        assert TOKEN not in built.out + built.err
        docker.images.remove(f"rocm/sgl-dev:{tag}", force=True)

        mirrored = run_door("invoke", "mirror-image", "--arch", "mi355", "--rocm", "rocm720",
                            env={**env, "LOCAL_DOCKER_REGISTRY": lan.address})
        assert mirrored.code == 0, mirrored.out + mirrored.err
        assert f"resolved rocm/sgl-dev:{tag} (newest in {public.address}'s tag list)" in mirrored.out
        assert f"mirrored rocm/sgl-dev:{tag} to {lan.address}/rocm/sgl-dev:{tag}" in mirrored.out and "matches the source" in mirrored.out
    finally:
        public.stop()
        lan.stop()
        drop_tag(docker, "rocm/sgl-dev", tag)


def test_build_without_a_dockerfile_is_a_clear_error(tmp_path):
    done = run_door("invoke", "build-image", "--arch", "mi300", env=base_env(GITHUB_WORKSPACE=str(tmp_path)))
    assert done.code == 2 and "no Dockerfile at" in done.err and "docker/rocm.Dockerfile" in done.err
