"""A stage's exit code never lies and its reports survive what the container did: signals still write
reports first, marked interrupted; results are read strictly and without following planted links;
secrets never reach a report; `--rocm` reaches the pull. Engine faked (real: test_trust_docker)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from ci import stage as stage_module
from ci.arch import ArchResolution
from ci.config import load_config
from ci.errors import ExitCodeUnknown, Terminated, ToolFailure
from ci.images import parse_image_name
from ci.plan import build_plan, load_tree
from ci.pull import Puller
from ci.stage import StageOptions, run_stage
from ci.untrusted import UnsafePath

TODAY = dt.date(2026, 4, 21)
CANARY = "hf_stage_canary_5e4d3c2b1a"
FILES = {
    "test_one.py": 'register_amd_ci(est_time=60, suite="stage-a-test-1-gpu-small-amd")\nimport unittest\nif __name__ == "__main__":\n    unittest.main()\n',
    "test_two.py": 'register_amd_ci(est_time=50, suite="stage-a-test-1-gpu-small-amd")\nimport unittest\nif __name__ == "__main__":\n    unittest.main()\n',
}


@pytest.fixture
def world(tmp_path, monkeypatch):
    workspace = tmp_path / "sglang"
    root = workspace / "test" / "registered"
    root.mkdir(parents=True)
    for name, text in FILES.items():
        (root / name).write_text(text)
    override = tmp_path / "site.yaml"
    override.write_text("images: {versions: [v0.5.10, v0.5.9]}\n")
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    summary = tmp_path / "step-summary.md"
    env = {"HF_TOKEN": CANARY, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(workspace)}
    events: list[str] = []
    fake_engine(monkeypatch)
    return SimpleNamespace(workspace=workspace, config=config, env=env, events=events, summary=summary, tmp=tmp_path)


def fake_engine(monkeypatch, real_pull=False):
    """No engine, no GPU: the machine checks pass, the install is a no-op; the rest is the stage's."""
    fit = SimpleNamespace(ok=True, failure=None, markdown=lambda: "")
    installed = SimpleNamespace(ok=True, failure=None, to_json=lambda: "{}", markdown=lambda: "")
    monkeypatch.setattr(stage_module.health, "connect", lambda config: (object(), None))
    monkeypatch.setattr(stage_module.health, "engine_host", lambda client, config: None)
    monkeypatch.setattr(stage_module.health, "stage_preflight", lambda *a, **k: fit)
    monkeypatch.setattr(stage_module.health, "lost_container", lambda containers: None)
    monkeypatch.setattr(stage_module.health, "stuck_gpu", lambda *a, **k: None)
    monkeypatch.setattr(stage_module.install, "target_of", lambda *a, **k: None)
    monkeypatch.setattr(stage_module.install, "install_checkout", lambda *a, **k: installed)
    monkeypatch.setattr(stage_module.gpu, "gpu_clean", lambda *a, **k: None)
    monkeypatch.setattr(stage_module, "build_spec", lambda *a, **k: SimpleNamespace(name="ci_sglang"))
    if not real_pull:
        monkeypatch.setattr(stage_module.pull, "pull_image",
                            lambda *a, **k: SimpleNamespace(image=parse_image_name("rocm/sgl-dev:T"), digest=""))


def plan_for(world, rocm=None):
    resolution = ArchResolution(world.config.arch("mi300"), "--arch")
    tree = load_tree(world.config, world.workspace / "test" / "registered")
    return build_plan(world.config, "stage-a", resolution, TODAY, tree, rocm=rocm, suite="stage-a-test-1-gpu-small-amd")


def run(world, exec_behaviour, rocm=None):
    report_dir = world.workspace / "ci-reports" / "stage-a"
    events = world.events

    class FakeContainers:
        def __init__(self, client, config, out):
            pass

        @contextlib.contextmanager
        def running(self, spec, secrets):
            events.append("start")
            try:
                yield
            finally:  # what exists when the stop begins
                events.append("stop:" + ",".join(sorted(p.name for p in report_dir.glob("*") if p.is_file())))

        def exec(self, argv, env, workdir, sink):
            events.append("exec")
            return exec_behaviour(report_dir)

        def stop(self):
            pass

    stage_module.Containers = FakeContainers
    options = StageOptions(world.workspace, report_dir, retries=0, continue_on_error=False)
    return run_stage(world.config, plan_for(world, rocm), options, world.env, TODAY, out=world.tmp.joinpath("out.txt").open("w")), report_dir


@pytest.fixture(autouse=True)
def _restore_containers():
    original = stage_module.Containers
    yield
    stage_module.Containers = original


def results_json(*entries) -> str:
    return json.dumps({"stage": "s", "files": [
        {"path": path, "est_time": 60, "status": status, "reason": reason, "seconds": 1.0,
         "attempts": [] if status == "not-run" else [{"exit_code": 0 if status == "passed" else 1, "seconds": 1.5,
                                                       "verdict": "passed" if status == "passed" else "failed",
                                                       "reason": reason, "retryable": False, "tests": 1, "failures": 0}]}
        for path, status, reason in entries]})


@pytest.mark.parametrize("signal_error, name", [(Terminated, "SIGTERM"), (KeyboardInterrupt, "SIGINT")])
def test_a_signal_during_the_run_writes_reports_first_marked_interrupted(world, signal_error, name):
    def behaviour(report_dir):
        (report_dir / "results.json").write_text(results_json(("test_one.py", "passed", ""), ("test_two.py", "not-run", "")))
        raise signal_error()

    with pytest.raises(signal_error):
        run(world, behaviour)
    report_dir = world.workspace / "ci-reports" / "stage-a"
    stop = [e for e in world.events if e.startswith("stop:")][0]
    assert {"junit.xml", "durations.json", "summary.md"} <= set(stop.split(":")[1].split(","))  # written before the stop
    summary = (report_dir / "summary.md").read_text()
    assert f"CANCELLED: interrupted by {name}" in summary and f"**INTERRUPTED**: interrupted by {name}" in summary
    junit = ET.fromstring((report_dir / "junit.xml").read_text())
    assert junit.find("testcase[@name='test_two.py']/skipped").get("message") == f"interrupted by {name} before it ran to an end"
    record = json.loads((report_dir / "durations.json").read_text())  # the run record: what ran to an end
    assert {u["name"]: u["outcome"] for u in record["units"]}["test_one.py"] == "passed"
    assert "INTERRUPTED" in world.summary.read_text()


def test_a_signal_during_the_pull_still_reports_every_file_as_not_run(world, monkeypatch):
    def interrupted_pull(*a, **k):
        raise Terminated()

    monkeypatch.setattr(stage_module.pull, "pull_image", interrupted_pull)
    with pytest.raises(Terminated):
        run(world, lambda report_dir: 0)
    report_dir = world.workspace / "ci-reports" / "stage-a"
    junit = ET.fromstring((report_dir / "junit.xml").read_text())
    assert junit.get("skipped") == "2" and "interrupted by SIGTERM before it ran" in (report_dir / "junit.xml").read_text()
    assert "exec" not in world.events and (report_dir / "durations.json").exists()


def test_malformed_results_are_a_failure_with_a_note_not_a_traceback(world):
    def behaviour(report_dir):
        (report_dir / "results.json").write_text('{"files": [1, {"path": 2}]}')
        return 0

    code, report_dir = run(world, behaviour)
    assert code == 1
    summary = (report_dir / "summary.md").read_text()
    assert "the runner's results could not be read" in summary and "FAILED" in summary


def test_an_unknown_exit_code_fails_the_stage(world):
    def behaviour(report_dir):
        (report_dir / "results.json").write_text(results_json(("test_one.py", "passed", ""), ("test_two.py", "passed", "")))
        raise ExitCodeUnknown("`python3` in ci_sglang: still running after the wait: its result is unknown, counted as failed")

    code, report_dir = run(world, behaviour)
    # the runner's own result is unknown: not the tests' failure, the machine's (never a pass)
    assert code == 3 and "its result is unknown" in (report_dir / "summary.md").read_text()


def test_links_planted_by_test_code_are_not_followed(world):
    victim = world.tmp / "host-file-the-host-runs.py"
    victim.write_text("print('original')\n")
    secret = world.tmp / "host-secret.json"
    secret.write_text(json.dumps({"bound": {"test": "t", "metric": "m", "kind": "min", "value": 1, "default_value": 1,
                                            "unit": "HOST-SECRET-CONTENT", "source": "s", "params": {}},
                                  "measured": 2, "ok": True, "margin_pct": 1}) + "\n")

    def behaviour(report_dir):
        (report_dir / "results.json").write_text(results_json(("test_one.py", "passed", ""), ("test_two.py", "passed", "")))
        (report_dir / "summary.md").symlink_to(victim)  # the host would write the summary into its own code
        (report_dir / "junit.xml").symlink_to(victim)
        (report_dir / "thresholds.jsonl").symlink_to(secret)  # ...or read its secrets into the summary
        return 0

    code, report_dir = run(world, behaviour)
    assert victim.read_text() == "print('original')\n"
    assert not (report_dir / "summary.md").is_symlink() and "PASSED" in (report_dir / "summary.md").read_text()
    assert "HOST-SECRET-CONTENT" not in (report_dir / "summary.md").read_text() + world.summary.read_text()
    assert code == 0


def test_a_report_folder_replaced_by_a_link_is_refused(world):
    elsewhere = world.tmp / "elsewhere"
    elsewhere.mkdir()

    def behaviour(report_dir):
        moved = report_dir.with_name("moved")
        report_dir.rename(moved)
        report_dir.symlink_to(elsewhere, target_is_directory=True)
        return 0

    with pytest.raises(UnsafePath):
        run(world, behaviour)
    assert list(elsewhere.iterdir()) == []
    assert issubclass(UnsafePath, ToolFailure)  # the door says it in one line, exit 1


def test_secrets_never_reach_junit_summary_or_the_step_summary(world):
    b64 = base64.b64encode(f"user:{CANARY}".encode()).decode()

    def behaviour(report_dir):
        (report_dir / "results.json").write_text(results_json(
            ("test_one.py", "failed", f"AssertionError: token {CANARY} {json.dumps({'t': CANARY})} auth {b64}"),
            ("test_two.py", "not-run", "")))
        return 1

    code, report_dir = run(world, behaviour)
    written = "".join(p.read_text() for p in report_dir.iterdir() if p.is_file() and p.name != "results.json")
    written += world.summary.read_text()
    assert code == 1 and "AssertionError: token ***" in written
    assert CANARY not in written and b64 not in written


def test_rocm_reaches_the_pull_the_stage_pulls_what_its_plan_printed(world, monkeypatch):
    monkeypatch.undo()  # the real pull_image, up to the resolution
    fake_engine(monkeypatch, real_pull=True)
    seen = {}

    class Stop(Exception):
        pass

    def resolve(self, candidates, listed_in=None):
        seen["candidates"] = tuple(candidates)
        raise Stop()

    monkeypatch.setattr(Puller, "resolve", resolve)
    plan = plan_for(world, rocm="rocm720")
    with pytest.raises(Stop):
        run(world, lambda report_dir: 0, rocm="rocm720")
    assert seen["candidates"] == plan.images and len(plan.images) == 14
    assert all("-rocm720-" in image.tag for image in seen["candidates"])
