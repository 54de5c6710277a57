"""The install step for real: a nightly stand-in with an older sglang baked in, the workspace's
python/ installed over it through the doors (invoke start-container, install-deps, exec,
kernel-tests, nox stage), the import proof, pip's cache on a data mount across two jobs, retries
only for network-looking failures, step timeouts, and a stage whose install fails: exit code 3
and no test file run."""

from __future__ import annotations

import re
import resource
import time
from pathlib import Path

import pytest
import yaml

from ci.config import load_config
from demo import run as demo
from tests.conftest import base_env, run_door
from tests.support.health import NO_GPU_HEALTH
from tests.support.images import python_image

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]
NAME = "ci_sglang_install_test"
NOFILE = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
IMAGE_COPY = "/usr/local/lib/python3.11/dist-packages/sglang/__init__.py"  # where the image's pip put it
CHECKOUT_COPY = "/sglang-checkout/python/sglang/__init__.py"
SHOW = ["python3", "-c", "import sglang; print('sglang', sglang.__version__, sglang.__file__)"]


@pytest.fixture(scope="module")
def nightly(docker, tmp_path_factory):
    return demo.nightly_image(docker, python_image(docker), tmp_path_factory.mktemp("bake"), load_config(env={}))


@pytest.fixture
def job(docker, nightly, tmp_path):
    """A workspace (the demo's checkout), a data mount, and config for a GPU-less box; `write`
    sets the install section (the demo's by default) and returns the env for the doors."""
    workspace = demo.write_checkout(tmp_path / "workspace", demo.CHECKOUT_VERSION)
    (workspace / "test").mkdir()  # `invoke exec` runs there
    data = tmp_path / "data"
    data.mkdir()
    override = tmp_path / "override.yaml"

    def write(install: dict | None = None, data_dir: Path = data) -> dict[str, str]:
        document = {
            "container": {
                "name": NAME, "network": "none", "devices": [{"path": "/dev/kfd", "optional": True}],
                "render_devices_fallback": {"path": "/dev/dri", "optional": True},
                "mounts": [{"source": "$WORKSPACE", "target": "/sglang-checkout"},
                           {"source": "$TOOLKIT", "target": "/sgl-ci", "read_only": True},
                           {"source": str(data_dir), "target": "/sgl-data"}],
                "ulimits": {"nofile": [NOFILE, NOFILE]}, "stop": {"sigint_grace_s": 2, "stop_timeout_s": 2},
                "hygiene": {"device_globs": [str(tmp_path / "no-kfd")], "rounds": 1}},
            "health": NO_GPU_HEALTH,
            "install": install or yaml.safe_load(demo.INSTALL)["install"],
        }
        override.write_text(yaml.safe_dump(document))
        return base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(workspace),
                        PUBLIC_DOCKER_REGISTRY="127.0.0.1:1")  # nothing to ask: the image is local

    yield write, workspace, nightly
    for container in docker.containers.list(all=True, filters={"name": NAME}):
        container.remove(force=True)


def start(env, image):
    done = run_door("invoke", "start-container", "--arch", "mi300", "--image", image, "--no-gpu-clean", env=env)
    assert done.code == 0, done.out + done.err


def demo_steps(*extra: dict, keep=("remove-image-copy", "checkout")) -> dict:
    install = yaml.safe_load(demo.INSTALL)["install"]
    install["steps"] = [s for s in install["steps"] if s["name"] in keep] + list(extra)
    install["retry"] = {"attempts": 3, "initial_wait_s": 0.2, "max_wait_s": 0.5, "jitter_s": 0}
    return install


def test_the_checkout_replaces_the_images_copy_and_the_proof_says_so(job):
    write, workspace, image = job
    env = write()
    start(env, image)
    before = run_door("invoke", "exec", "--", *SHOW, env=env)
    assert f"sglang {demo.BAKED_VERSION} {IMAGE_COPY}" in before.out  # what the files would test without the step

    # Without removing the image's copy and installing the checkout, the proof stops the job.
    stale = run_door("invoke", "install-deps", "--skip", "remove-image-copy", "--skip", "checkout", env=env)
    assert stale.code == 3, stale.out + stale.err
    assert f"sglang is imported from {IMAGE_COPY}, not from the checkout /sglang-checkout/python" in stale.out

    done = run_door("invoke", "install-deps", env=env)
    assert done.code == 0, done.out + done.err
    assert "install: image flavor gfx942 rocm700 (the image's GPU_ARCH=gfx942); extras [dev_hip,tracing]" in done.out
    assert "Successfully uninstalled sglang-0.5.9" in done.out
    assert re.search(r"install: kernel: skipped in [\d.]+ s \(kernel sources match the image \(sha256:", done.out)
    assert f"install: sglang {demo.CHECKOUT_VERSION} is imported from {CHECKOUT_COPY}" in done.out
    commit_line = next(line for line in done.out.splitlines() if line.startswith("install: checkout "))
    assert f"image {image} sha256:" in commit_line  # a local image: its id stands in for a registry digest
    after = run_door("invoke", "exec", "--", *SHOW, env=env)
    assert f"sglang {demo.CHECKOUT_VERSION} {CHECKOUT_COPY}" in after.out

    # A change to the kernel sources: the image no longer matches, the kernel step builds.
    (workspace / "python/sglang/kernels/aot/topk_sigmoid.hip").write_text("// the change under test\n")
    rebuilt = run_door("invoke", "install-deps", env=env)
    assert rebuilt.code == 0, rebuilt.out + rebuilt.err
    assert "$ python3 -m compileall -q python/sglang" in rebuilt.out
    assert re.search(r"install: kernel: ok in [\d.]+ s \(kernel sources differ from the image's", rebuilt.out)

    # kernel-tests in the container installs the checkout first, as a stage does.
    kernel = run_door("invoke", "kernel-tests", "--arch", "mi300", "--", "-rs", env=env)
    assert kernel.code == 5, kernel.out + kernel.err  # pytest's "no test ran": this image has no torch
    assert kernel.out.index("install: OK in") < kernel.out.index("SKIPPED")


def test_pip_cache_on_the_data_mount_makes_the_second_job_warm(job, docker):
    write, _, image = job
    env = write()
    seen = []
    for _ in range(2):  # two jobs on one runner: a new container each, the same data mount
        start(env, image)
        done = run_door("invoke", "install-deps", env=env)
        assert done.code == 0, done.out + done.err
        seen.append(done.out)
        assert run_door("invoke", "stop-container", env=env).code == 0
    first, second = (re.search(r"install: OK in ([\d.]+) s; pip cache (\w+)", out) for out in seen)
    assert first.group(2) == "cold" and second.group(2) == "warm"
    assert "Stored in directory: /sgl-data/pip-cache/wheels/" in seen[0]
    assert "Using cached sgl_demo_eval-1.0-py3-none-any.whl" in seen[1]
    assert re.search(r"pip cache warm \(\d+ files, [\d.]+ MiB\) at /sgl-data/pip-cache, on the runner's data mount", seen[1])
    print(f"install: cold cache {first.group(1)} s, warm cache {second.group(1)} s")


FLAKY = ("import os, sys\n"
         "if not os.path.exists(sys.argv[1]):\n"
         "    open(sys.argv[1], 'w').close()\n"
         "    print(\"WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(\"\n"
         "          \"Failed to establish a new connection: [Errno 101] Network is unreachable)': /simple/lmms-eval/\")\n"
         "    sys.exit(1)\n"
         "print('installed on the second try')\n")
BUILD_ERROR = ("import sys\n"
               "open(sys.argv[1], 'a').write('try\\n')\n"
               "print(\"csrc/topk.hip:12:5: error: use of undeclared identifier 'warpSize'\")\n"
               "print(\"error: command '/opt/rocm/llvm/bin/clang++' failed with exit code 1\")\n"
               "sys.exit(1)\n")


def test_a_network_failure_is_retried_and_a_build_error_is_not(job):
    write, _, image = job
    env = write(demo_steps({"name": "test-deps", "timeout_s": 60, "run": [["python3", "-c", FLAKY, "/tmp/flaky-once"]]}))
    start(env, image)
    done = run_door("invoke", "install-deps", env=env)
    assert done.code == 0, done.out + done.err
    assert "install: test-deps: try 1/3 failed with a network-looking error" in done.out
    assert re.search(r"install: test-deps: ok in [\d.]+ s", done.out) and "installed on the second try" in done.out

    env = write(demo_steps({"name": "kernel", "timeout_s": 60, "run": [["python3", "-c", BUILD_ERROR, "/tmp/build-tries"]]},
                           {"name": "warmup", "timeout_s": 60, "run": [["python3", "-m", "sglang.warmup"]]}))
    failed = run_door("invoke", "install-deps", env=env)
    assert failed.code == 3, failed.out + failed.err
    assert "install: kernel: failed" in failed.out and "(not retried: not a network error)" in failed.out
    assert "error: command '/opt/rocm/llvm/bin/clang++' failed with exit code 1" in failed.out
    assert "install: warmup: not run in 0.0 s (an earlier step failed)" in failed.out and "warm-up:" not in failed.out
    tries = run_door("invoke", "exec", "--", "cat", "/tmp/build-tries", env=env)
    assert tries.out.count("try") == 1


def test_a_step_past_its_timeout_is_killed_with_its_children(job):
    write, _, image = job
    hang = ["python3", "-c", "import subprocess; subprocess.run(['sleep', '97'])"]
    env = write(demo_steps({"name": "warmup", "timeout_s": 2, "run": [hang]}))
    start(env, image)
    started = time.monotonic()
    done = run_door("invoke", "install-deps", env=env)
    assert done.code == 3, done.out + done.err
    assert time.monotonic() - started < 30
    assert "install: warmup: timeout" in done.out and "killed at the step timeout (2 s)" in done.out
    left = run_door("invoke", "exec", "--", "ps", "-eo", "args", env=env)
    assert "sleep 97" not in left.out


def test_a_stage_whose_install_fails_runs_no_file_and_exits_3(job, tmp_path):
    write, workspace, image = job
    broken = demo_steps({"name": "checkout", "timeout_s": 60,
                         "run": [["python3", "-m", "pip", "install", "--no-index", "-e", "python-missing[{extras}]"]]},
                        keep=("remove-image-copy",))
    env = write(broken)
    tests = workspace / "test" / "registered"
    tests.mkdir()
    ran = workspace / "ran.txt"
    (tests / "test_one.py").write_text(
        "import unittest\nfrom pathlib import Path\n"
        "register_amd_ci = lambda **kw: None\n"
        "register_amd_ci(est_time=5, suite='stage-a-test-1-gpu-small-amd')\n"
        "class T(unittest.TestCase):\n"
        "    def test_it(self):\n"
        f"        Path('/sglang-checkout/{ran.name}').write_text('ran')\n"
        "if __name__ == '__main__':\n    unittest.main()\n")
    done = run_door("nox", "-s", "stage_a", "--", "--arch", "mi300", "--suite", "stage-a-test-1-gpu-small-amd",
                    "--image", image, env=env, timeout=300)
    assert done.code == 3, done.out[-3000:] + done.err[-3000:]
    assert "install: checkout: failed" in done.out and "(not retried: not a network error)" in done.out
    assert "stage-a: INFRASTRUCTURE FAILURE: install step 'checkout' failed" in done.out
    assert not ran.exists()  # no test file ran
    reports = next((workspace / "ci-reports").glob("stage-a*"))
    junit = (reports / "junit.xml").read_text()
    assert 'failures="0"' in junit and 'skipped="1"' in junit and "not run: install step 'checkout' failed" in junit
    summary = (reports / "summary.md").read_text()
    assert "**INFRASTRUCTURE FAILURE" in summary and "No test file ran; the files are reported as not run." in summary
    assert "| ⏭️ | `test_one.py` | not-run |" in summary
    assert '"ok": false' in (reports / "install.json").read_text()


PIN = {"name": "pin", "kind": "pin", "timeout_s": 60,
       "pin": {"distribution": "sglang", "dockerfile": "docker/rocm.Dockerfile", "stage": "{gfx}{stage_suffix}",
               "arg": "SGLANG_COMMIT_DEFAULT", "lookahead_lines": 20, "keep_pattern": r"dev|\+g[0-9a-f]+", "override_env": "SGLANG_COMMIT_OVERRIDE"},
       "run": [["python3", "-c", "import sys; print('rebuilding at', sys.argv[1])", "{pin}"]]}


def test_a_pin_step_rebuilds_only_when_the_image_differs_from_the_dockerfile(job):
    write, workspace, image = job
    install = yaml.safe_load(demo.INSTALL)["install"]
    install["steps"] = [PIN, *install["steps"]]  # before the image's sglang is replaced
    env = write(install)
    (workspace / "docker").mkdir()
    dockerfile = workspace / "docker" / "rocm.Dockerfile"
    start(env, image)

    dockerfile.write_text('FROM base AS gfx942\nARG SGLANG_COMMIT_DEFAULT="v0.5.9"\nFROM base AS gfx942-rocm720\n'
                          'ARG SGLANG_COMMIT_DEFAULT="v9.9.9"\n')
    same = run_door("invoke", "install-deps", env=env)
    assert same.code == 0, same.out + same.err
    assert "install: sglang 0.5.9 in the image, v0.5.9 pinned by docker/rocm.Dockerfile (gfx942): matches the pin" in same.out
    assert "rebuilding at" not in same.out

    dockerfile.write_text('FROM base AS gfx942\nARG SGLANG_COMMIT_DEFAULT="v0.6.0"\n')
    start(env, image)  # a fresh image copy again
    differs = run_door("invoke", "install-deps", env=env)
    assert differs.code == 0 and "differs from the pin: rebuild" in differs.out and "rebuilding at v0.6.0" in differs.out

    start(env, image)
    forced = run_door("invoke", "install-deps", env={**env, "SGLANG_COMMIT_OVERRIDE": "5f3a9c1"})
    assert "pinned by SGLANG_COMMIT_OVERRIDE: overridden: rebuild" in forced.out and "rebuilding at 5f3a9c1" in forced.out

    start(env, image)
    hostile = run_door("invoke", "install-deps", env={**env, "SGLANG_COMMIT_OVERRIDE": "--upload-pack=x"})
    assert hostile.code == 3 and "'--upload-pack=x' is not a version or commit" in hostile.out
    assert "rebuilding at" not in hostile.out
