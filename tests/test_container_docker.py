"""start-container, exec and stop-container through the real doors and a real engine, with a
locally built image; and the guarantee that whatever starts a container stops it, on success,
failure, SIGINT and SIGTERM, leaving no container and no process behind."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, base_env, run_door
from tests.support.images import python_image

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]
NAME = "ci_sglang_test"
# CI sets nofile 65536; this sandbox's engine may not grant more than its own hard limit.
NOFILE = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


@pytest.fixture(scope="module")
def image(docker):
    return python_image(docker)


@pytest.fixture
def setup(docker, image, tmp_path):
    """A workspace, a render-devices file naming stand-in devices, and config for a GPU-less box."""
    workspace = tmp_path / "sglang"
    workspace.mkdir()
    render = tmp_path / "gha-render-devices"
    render.write_text("--device=/dev/zero --device=/dev/urandom\n")
    override = tmp_path / "override.yaml"
    override.write_text(f"""
container:
  name: {NAME}
  network: none
  devices: [{{path: /dev/kfd, optional: true}}]
  render_devices_file: {render}
  ulimits: {{nofile: [{NOFILE}, {NOFILE}]}}
  stop: {{sigint_grace_s: 3, stop_timeout_s: 2}}
  hygiene: {{device_globs: ['{tmp_path}/no-kfd']}}
""")
    env = base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(workspace), HF_TOKEN="hf_canary_4d1e")
    yield env, workspace, override
    for container in docker.containers.list(all=True, filters={"name": NAME}):
        container.remove(force=True)


def ours(docker):
    return [c for c in docker.containers.list(all=True) if c.name == NAME]


def test_start_container_passes_everything_from_config(docker, image, setup):
    env, workspace, _ = setup
    done = run_door("invoke", "start-container", "--arch", "mi355", "--image", image, env=env)
    assert done.code == 0, done.err
    (container,) = ours(docker)
    host = container.attrs["HostConfig"]
    assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/zero", "/dev/urandom"]
    assert host["GroupAdd"] == ["video"] and host["CapAdd"] == ["SYS_PTRACE"]
    assert host["SecurityOpt"] == ["seccomp=unconfined"] and host["ShmSize"] == 32 * 2**30
    assert host["Init"] is True and host["NetworkMode"] == "none"
    assert [(u["Name"], u["Soft"], u["Hard"]) for u in host["Ulimits"]] == [("nofile", NOFILE, NOFILE)]
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in container.attrs["Mounts"]}
    assert mounts["/sglang-checkout"] == (str(workspace), True)
    assert mounts["/sgl-ci"] == (str(ROOT), False)
    config_env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert config_env["GPU_ARCHS"] == "gfx950" and config_env["SGL_CI_ARCH"] == "mi355"
    assert config_env["HF_HOME"] == "/sgl-data/hf-cache"
    # The secret is given to each exec, never stored in the container's config (docker inspect).
    assert "HF_TOKEN" not in config_env and "hf_canary_4d1e" not in json.dumps(container.attrs)
    assert container.attrs["Config"]["User"] == "root" and container.attrs["Config"]["WorkingDir"] == "/sglang-checkout"
    assert "left out (optional, missing here): device /dev/kfd" in done.out
    assert "hf_canary_4d1e" not in done.out + done.err
    # A container of the same name left by an earlier run is removed, with a line saying so:
    # by GPU hygiene (a stale CI container) or, without it, by the start itself.
    again = run_door("invoke", "start-container", "--arch", "mi355", "--image", image, env=env)
    assert again.code == 0, again.err
    assert f"stopping container {NAME}" in again.out and "stale CI container" in again.out
    third = run_door("invoke", "start-container", "--arch", "mi355", "--image", image, "--no-gpu-clean", env=env)
    assert third.code == 0, third.err
    assert f"removing container {NAME}" in third.out and "left by an earlier run" in third.out
    assert len(ours(docker)) == 1


def test_exec_streams_output_returns_the_exit_code_and_retries_offline(docker, image, setup):
    env, workspace, _ = setup
    assert run_door("invoke", "start-container", "--arch", "mi300", "--image", image, env=env).code == 0
    script = ("import os, sys; print('in-ci', os.environ['SGLANG_IS_IN_CI_AMD'], os.getcwd(), "
              "os.environ.get('HF_HUB_OFFLINE', '-'), flush=True); sys.exit(int(sys.argv[1]))")
    (workspace / "test").mkdir()
    done = run_door("invoke", "exec", "--", "python3", "-c", script, "3", env=env)  # the argv as typed, no extra quoting
    assert done.code == 3
    assert done.out.count("in-ci 1 /sglang-checkout/test") == 2
    assert "in-ci 1 /sglang-checkout/test -" in done.out and "in-ci 1 /sglang-checkout/test 1" in done.out
    assert "exit code 3: retrying once with HF_HUB_OFFLINE=1" in done.out
    done = run_door("invoke", "exec", "--", "python3", "-c", script, "1", env=env)
    assert done.code == 1 and done.out.count("in-ci") == 1  # 1 is not retried


def test_stop_container_sends_sigint_first(docker, image, setup):
    env, workspace, _ = setup
    assert run_door("invoke", "start-container", "--arch", "mi300", "--image", image, env=env).code == 0
    (container,) = ours(docker)
    trap = ("import signal, sys, time\n"
            "def bye(*a):\n    open('/sglang-checkout/got-sigint', 'w').write('yes'); sys.exit(0)\n"
            "signal.signal(signal.SIGINT, bye)\nprint('ready', flush=True)\ntime.sleep(600)\n")
    (workspace / "trap.py").write_text(trap)
    container.exec_run(["python3", "/sglang-checkout/trap.py"], detach=True)
    time.sleep(1)
    done = run_door("invoke", "stop-container", env=env)
    assert done.code == 0, done.err
    assert "SIGINT to 1 process(es)" in done.out
    assert (workspace / "got-sigint").read_text() == "yes"
    assert ours(docker) == []
    assert "no container ci_sglang_test to stop" in run_door("invoke", "stop-container", env=env).out


DRIVER = """
import os, sys, time
from ci.config import load_config
from ci.container import Containers, HostView, build_spec
from ci.registry import connect
config = load_config()
containers = Containers(connect(30), config.container)
spec = build_spec(config.container, config.arches["mi300"], "default", sys.argv[1], HostView(os.environ))
with containers.running(spec, {}):
    print("running", flush=True)
    if sys.argv[2] == "fail":
        raise RuntimeError("boom")
    if sys.argv[2] in ("sigint", "sigterm"):
        containers.exec(["sleep", "600"], {}, "/")
"""


@pytest.mark.parametrize("ending", ["success", "fail", "sigint", "sigterm"])
def test_whatever_starts_a_container_stops_it(docker, image, setup, ending):
    env, _, _ = setup
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, image, ending], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while "running" not in driver.stdout.readline():
        assert driver.poll() is None, driver.stderr.read()
    if ending in ("sigint", "sigterm"):
        time.sleep(1)  # the exec'd sleep is running in the container
        (container,) = ours(docker)
        assert any("sleep 600" in " ".join(p) for p in container.top()["Processes"])
        driver.send_signal(signal.SIGINT if ending == "sigint" else signal.SIGTERM)
    code = driver.wait(60)
    assert code != 0 if ending != "success" else code == 0
    assert ours(docker) == []
    leftovers = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "a process outlived the container"


def test_kernel_tests_in_the_container_write_junit_and_skip_without_sgl_kernel(docker, image, setup):
    env, workspace, _ = setup
    assert run_door("invoke", "start-container", "--arch", "mi300", "--image", image, env=env).code == 0
    # This image has no sglang to install (tests/test_install_docker.py runs the install before them).
    done = run_door("invoke", "kernel-tests", "--arch", "mi300", "--no-install", "--", "-rs", env=env)
    assert done.code == 5, done.out + done.err  # pytest's own code for "no test ran": passed through, not hidden
    assert "torch is needed for the kernel tests" in done.out
    junit = (workspace / "ci-reports" / "kernel-tests.xml").read_text()
    assert 'skipped="1"' in junit and "torch is needed" in junit


def test_kernel_tests_on_the_host(tmp_path):
    done = run_door("invoke", "kernel-tests", "--arch", "mi325", "--host", "--", "-rs",
                    env=base_env(GITHUB_WORKSPACE=str(tmp_path)))
    assert done.code == 5, done.out + done.err
    assert "SKIPPED" in done.out and (tmp_path / "ci-reports" / "kernel-tests.xml").exists()
