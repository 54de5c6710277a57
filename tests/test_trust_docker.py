"""Trust boundaries on a real engine: a root process in the CI container cannot change what the host
runs; canary secrets never show in `docker inspect`, reports or output yet reach the test; exec
runs the argv as typed; a stage stopped by SIGTERM or SIGINT writes its reports and fails."""

from __future__ import annotations

import base64
import hashlib
import json
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ci.config import load_config
from ci.container import Containers, HostView, build_spec
from ci.registry import connect
from ci.toolkit import host_run_files
from demo import run as demo
from tests.conftest import ROOT, base_env, run_door
from tests.support.health import NO_GPU_HEALTH
from tests.support.images import python_image

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
NAME = "ci_sglang_trust"
NOFILE = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
HF_CANARY = "hf_trustCanary+/0a9b8c7d6e5f"
HUB_CANARY = "dckr_pat_trustCanary_1f2e3d4c5b"
SUITE = "stage-trust-test-1-gpu-amd"
REGISTER = "def register_amd_ci(*args, **kwargs):  # SGLang's registration, a no-op when run\n    pass\n"


def override_text(tmp_path: Path) -> str:
    render = tmp_path / "gha-render-devices"
    render.write_text("--device=/dev/zero\n")
    return f"""
images: {{registries: {{public: "127.0.0.1:9"}}}}
pull:
  login: {{attempts: 2, initial_wait_s: 0.1, max_wait_s: 0.2, jitter_s: 0}}
  probe_timeout_s: 5
container:
  name: {NAME}
  network: none
  devices: [{{path: /dev/kfd, optional: true}}]
  render_devices_file: {render}
  ulimits: {{nofile: [{NOFILE}, {NOFILE}]}}
  stop: {{sigint_grace_s: 3, stop_timeout_s: 2}}
  hygiene: {{device_globs: ['{tmp_path}/no-kfd'], rounds: 1}}
{demo.one_stage("stage-trust", SUITE, "the trust tests' stage", 300, 0)}health: {json.dumps(NO_GPU_HEALTH)}
""" + demo.INSTALL


@pytest.fixture(scope="module")
def image(docker, tmp_path_factory):
    """The demo's nightly stand-in: pip ready and an sglang baked in, for the stage to install over."""
    return demo.nightly_image(docker, python_image(docker), tmp_path_factory.mktemp("bake"), load_config(env={}))


@pytest.fixture
def world(docker, image, tmp_path):
    workspace = demo.write_checkout(tmp_path / "work" / "sglang", demo.CHECKOUT_VERSION)  # the stage installs it
    (workspace / "test" / "registered").mkdir(parents=True)
    override = tmp_path / "override.yaml"
    override.write_text(override_text(tmp_path))
    yield workspace, override
    for container in docker.containers.list(all=True, filters={"name": NAME}):
        container.remove(force=True)


def digest_tree(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


PROBE = r"""
import errno, json, os, sys
targets, hidden = sys.argv[1].split(","), sys.argv[2].split(",")
report = {"changed": [], "refused": 0, "hidden_visible": [p for p in hidden if os.path.exists(p)], "workspace_write": False}
for target in targets:
    for directory, subdirs, files in os.walk(target):
        for name in files + subdirs:
            path = os.path.join(directory, name)
            for attempt in ("append", "chmod", "rename", "unlink"):
                try:
                    if attempt == "append":
                        with open(path, "a") as f:
                            f.write("# rewritten by code under test\n")
                    elif attempt == "chmod":
                        os.chmod(path, 0o777)
                    elif attempt == "rename":
                        os.rename(path, path + ".moved"); os.rename(path + ".moved", path)
                    elif os.path.isfile(path):
                        os.unlink(path)
                    else:
                        continue
                    report["changed"].append(f"{attempt} {path}")
                except OSError:
                    report["refused"] += 1
        try:
            with open(os.path.join(directory, "planted.py"), "w") as f:
                f.write("print('planted')\n")
            report["changed"].append(f"create {directory}/planted.py")
        except OSError:
            report["refused"] += 1
with open("/sglang-checkout/written-from-the-container", "w") as f:
    report["workspace_write"] = bool(f.write("yes"))
print("PROBE " + json.dumps(report), flush=True)
"""


def test_code_in_the_container_cannot_change_what_the_host_runs(docker, image, world, tmp_path):
    workspace, override = world
    temp = tmp_path / "runner-temp"
    done = subprocess.run([sys.executable, str(ROOT / "ci" / "setup_toolkit.py"), "--home", str(temp / "sgl-ci"), "--no-deps"],
                          env=base_env(GITHUB_WORKSPACE=str(workspace)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    home, venv = temp / "sgl-ci" / "src", temp / "sgl-ci" / "venv"
    host_runs = [*host_run_files(home), *(p for p in (venv / "lib").rglob("*") if p.is_file() and "/ci/" in str(p))]
    before = digest_tree(host_runs)
    assert len(before) > 30
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    spec = build_spec(config.container, config.arches["mi300"], "default", image,
                      HostView({"GITHUB_WORKSPACE": str(workspace)}, toolkit=str(home)))
    targets = [m.target for m in spec.mounts]
    assert "/sgl-ci" in targets and "/sglang-checkout" in targets
    (workspace / "probe.py").write_text(PROBE)
    containers = Containers(connect(30), config.container)
    out = tmp_path / "probe.out"
    with containers.running(spec, {}), out.open("wb") as sink:
        code = containers.exec(["python3", "/sglang-checkout/probe.py", ",".join(t for t in targets if t != "/sglang-checkout"),
                                ",".join([str(home), str(venv), str(temp)])], {}, "/", sink)
    assert code == 0, out.read_text()
    report = json.loads(next(line for line in out.read_text().splitlines() if line.startswith("PROBE "))[6:])
    assert report["workspace_write"] and (workspace / "written-from-the-container").read_text() == "yes"  # it had root and a writable mount
    assert report["refused"] > len(before) and report["changed"] == []  # ...yet the toolkit refused every change
    assert report["hidden_visible"] == []  # the virtualenv and the installed copy are not even visible
    assert digest_tree(host_runs) == before
    assert not list(home.rglob("planted.py"))


def test_secrets_never_show_in_inspect_reports_or_output_but_reach_the_test(docker, image, world, tmp_path):
    workspace, override = world
    leak = ("import base64, hashlib, json, os, unittest\n" + REGISTER +
            f'register_amd_ci(est_time=5, suite="{SUITE}")\n'
            "class T(unittest.TestCase):\n"
            "    def test_leak(self):\n"
            "        t = os.environ['HF_TOKEN']\n"
            "        print('sha256', hashlib.sha256(t.encode()).hexdigest(), flush=True)\n"
            "        print('raw', t, 'json', json.dumps({'t': t}), 'b64', base64.b64encode(('u:' + t).encode()).decode())\n"
            "        self.fail('accuracy below bound, token ' + t)\n"
            "if __name__ == '__main__':\n    unittest.main()\n")
    (workspace / "test" / "registered" / "test_leak.py").write_text(leak)
    step_summary = tmp_path / "step-summary.md"
    env = base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(workspace), GITHUB_ACTIONS="true",
                   GITHUB_STEP_SUMMARY=str(step_summary), HF_TOKEN=HF_CANARY, DOCKERHUB_AMD_USERNAME="ci-bot",
                   DOCKERHUB_AMD_TOKEN=HUB_CANARY)
    inspected: list[str] = []
    stop = threading.Event()

    def watch():  # `docker inspect` of the container and of every exec, all through the run
        while not stop.is_set():
            try:
                container = docker.containers.get(NAME)
                inspected.append(json.dumps(container.attrs))
                for exec_id in container.attrs.get("ExecIDs") or []:
                    inspected.append(json.dumps(docker.api.exec_inspect(exec_id)))
            except Exception:
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = run_door("nox", "-s", "stage_trust", "--", "--arch", "mi300", "--suite", SUITE, "--image", image,
                        env=env, timeout=500)
    finally:
        stop.set()
        watcher.join(5)
    assert done.code == 1, done.out[-3000:] + done.err[-3000:]  # the file failed: the stage says so
    assert f"sha256 {hashlib.sha256(HF_CANARY.encode()).hexdigest()}" in done.out  # the test had the token
    assert inspected and any('"Config"' in text for text in inspected)
    reports = workspace / "ci-reports"
    written = {str(p): p.read_text(errors="replace") for p in reports.rglob("*") if p.is_file()}
    assert any(p.endswith("junit.xml") for p in written) and any(p.endswith("summary.md") for p in written)
    everything = {"stdout (no mask lines)": "\n".join(line for line in done.out.splitlines() if not line.startswith("::add-mask::")),
                  "stderr": done.err, "step summary": step_summary.read_text(), **written,
                  **{f"inspect {i}": text for i, text in enumerate(inspected)}}
    for canary in (HF_CANARY, HUB_CANARY):
        forms = [canary, json.dumps(canary)[1:-1], base64.b64encode(("u:" + canary).encode()).decode()]
        leaks = [(where, form) for where, text in everything.items() for form in forms if form in text]
        assert leaks == [], leaks
        assert f"::add-mask::{canary}" in done.out.splitlines()[:6]  # masked before anything else
    config_env = [e for text in inspected for e in json.loads(text).get("Config", {}).get("Env") or []]
    assert config_env and not [e for e in config_env if e.startswith("HF_TOKEN=")]


def test_exec_runs_the_argv_as_typed(docker, image, world):
    workspace, override = world
    env = base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(workspace))
    (workspace / "test").mkdir(exist_ok=True)
    assert run_door("invoke", "start-container", "--arch", "mi300", "--image", image, "--no-gpu-clean", env=env).code == 0
    done = run_door("invoke", "exec", "--", "sh", "-c", "exit 3", env=env)
    assert done.code == 3, done.err
    done = run_door("invoke", "exec", "--", "printf", "%s|", "a b", "", "c", env=env)
    assert done.code == 0 and done.out.endswith("a b||c|"), done.out
    assert run_door("invoke", "stop-container", env=env).code == 0


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_stage_stopped_by_a_signal_writes_its_reports_and_fails(docker, image, world, sig, code, name):
    workspace, override = world
    (workspace / "test" / "registered" / "test_fast.py").write_text(REGISTER +
        f'register_amd_ci(est_time=9, suite="{SUITE}")\nimport unittest\nclass T(unittest.TestCase):\n'
        "    def test_ok(self):\n        pass\nif __name__ == '__main__':\n    unittest.main()\n")
    (workspace / "test" / "registered" / "test_slow.py").write_text(REGISTER +
        f'register_amd_ci(est_time=5, suite="{SUITE}")\nimport time, unittest\nclass T(unittest.TestCase):\n'
        "    def test_wait(self):\n        print('slow file started', flush=True)\n        time.sleep(300)\n"
        "if __name__ == '__main__':\n    unittest.main()\n")
    env = base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(workspace))
    door = subprocess.Popen([sys.executable, "-m", "nox", "-s", "stage_trust", "--", "--arch", "mi300", "--suite", SUITE,
                             "--image", image], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in door.stdout:
        seen.append(line)
        if "slow file started" in line:
            break
    assert door.poll() is None, "".join(seen) + door.stderr.read()
    started = time.monotonic()
    door.send_signal(sig)
    out, err = door.communicate(timeout=120)
    assert door.returncode == code, "".join(seen) + out + err
    assert time.monotonic() - started < 60
    ours = [line for line in err.splitlines() if line.strip() and not line.startswith("nox >")]
    assert "Traceback" not in err and ours == [f"interrupted ({name}): stopped before the end; the exit code says failed"], err
    reports = next((workspace / "ci-reports").iterdir())
    summary = (reports / "summary.md").read_text()
    assert f"CANCELLED: interrupted by {name}" in summary
    junit = (reports / "junit.xml").read_text()
    assert 'name="test_fast.py"' in junit and "test_slow.py" in junit and f"interrupted by {name}" in junit
    record = json.loads((reports / "durations.json").read_text())  # the run record: the file that ran to an end
    assert {u["name"]: u["outcome"] for u in record["units"]}["test_fast.py"] == "passed"
    assert [c for c in docker.containers.list(all=True) if c.name == NAME] == []  # and the container is gone
