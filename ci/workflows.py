"""GitHub workflows rendered from config (`invoke workflows`): labels, timeouts, stages, partitions,
action SHAs and secret names have one home; every run step is one nox or invoke call, fed through
env, running the toolkit installed outside the workspace; publish jobs run apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ci.config import ROCM_ENV, Config, StageSpec
from ci.images import IMAGE_ENV
from ci.outcome import OUTPUT_NAME

HEADER = ("# Rendered by `invoke workflows` from config/*.yaml; edit config, not this file.\n"
          "# LOCAL_DOCKER_REGISTRY is set in each self-hosted runner's environment (its .env file):\n"
          "# the LAN mirror is a property of the runner's network, not of the workflow.\n")
ROUTE = "fromJSON(needs.route.outputs.jobs)"
# The code under test: a dispatch may name a fork pull request's head commit.
TEST_REF = "${{ inputs.pr_head_sha || github.sha }}"
PR_WORKFLOW = ".github/workflows/pr-test-amd.yml"
NIGHTLY_WORKFLOW = ".github/workflows/nightly-test-amd.yml"
NEEDS_ENV = "NEEDS_JSON"
HOME = '"$SGL_CI_HOME"'  # the installed toolkit (set by the setup action), outside the workspace
DURATIONS_OUTPUT = "durations"
# The retry rule: the stage step's id, its failure-class output (ci.outcome), the retry step's id.
STAGE_STEP, FAILURE_OUTPUT, RETRY_STEP = "stage", OUTPUT_NAME, "retry"


def _expr(text: str) -> str:
    return "${{ " + text + " }}"


def _uses(config: Config, action: str) -> str:
    pinned = config.workflows.actions[action]
    return f"{pinned.repository}@{pinned.sha}"


def setup_action_ref(config: Config) -> str:
    """The toolkit's setup action at the pinned toolkit commit: GitHub fetches it outside the
    workspace, and it installs the toolkit under $RUNNER_TEMP."""
    wf = config.workflows
    return f"{wf.toolkit_repository}/.github/actions/setup-toolkit@{wf.toolkit_ref}"


def _checkout_steps(config: Config, fetch_depth: int = 1, pr: bool = False) -> list[dict[str, Any]]:
    code = {"fetch-depth": fetch_depth, "persist-credentials": False}
    return [
        {"name": "Check out the code under test", "uses": _uses(config, "checkout"),
         "with": {"ref": TEST_REF, **code} if pr else code},
        _setup_step(config),
    ]


def _setup_step(config: Config) -> dict[str, Any]:
    return {"name": "Install the CI toolkit outside the workspace", "uses": setup_action_ref(config)}


def _invoke(config: Config, args: str) -> str:
    return f"invoke --search-root {HOME} {args}"


def _dispatch_inputs(config: Config, targets: list[str], nightly: bool) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "target_stage": {"description": "Comma-separated stages or suites to run (empty: all), e.g. "
                                        + ", ".join(targets[:2]), "type": "string", "default": ""},
        "runner_arch": {"description": "MI30x runner pool", "type": "choice",
                        "options": list(config.routing.input_arches), "default": config.routing.default_input},
        "image": {"description": "Image override (default: newest nightly)", "type": "string", "default": ""},
        "continue_on_error": {"description": "Keep going after a failed file", "type": "boolean", "default": False},
        "rocm_version": {"description": "ROCm flavour of the image", "type": "choice",
                         "options": list(config.images.rocm_versions),
                         "default": config.workflows.nightly_test_rocm if nightly else config.workflows.pr_test_rocm},
    }
    if not nightly:
        inputs["pr_head_sha"] = {"description": "Head commit to test (a fork pull request's)", "type": "string", "default": ""}
        inputs["run_all_tests"] = {"description": "Skip change detection and label gates", "type": "boolean", "default": False}
    return inputs


def _route_job(config: Config, cadence: str) -> dict[str, Any]:
    wf = config.workflows
    flags = '--event "$GITHUB_EVENT_NAME" --runner-arch "$RUNNER_ARCH_INPUT" --target "$TARGET_INPUT"'
    env = {"RUNNER_ARCH_INPUT": _expr("inputs.runner_arch"), "TARGET_INPUT": _expr("inputs.target_stage")}
    if cadence == "nightly":
        flags += " --cadence nightly"
    else:
        env["PR_LABELS"] = _expr("join(github.event.pull_request.labels.*.name, ',')")
        flags += (' --labels "$PR_LABELS" --changes-since HEAD^1'
                  + _expr("inputs.run_all_tests && ' --run-all' || ''"))
    flags += _expr("inputs.continue_on_error && ' --continue-on-error' || ''")
    flags += f" --durations {config.durations.store_path}"
    return {
        "name": "route",
        "runs-on": wf.route_runner,
        "timeout-minutes": wf.route_timeout_minutes,
        "outputs": {key: _expr(f"steps.route.outputs.{key}")
                    for key in ("jobs", "continue_on_error", "bypass_fastfail", DURATIONS_OUTPUT)},
        # fetch-depth 2: a pull request's merge commit and its base, for change detection
        "steps": [*_checkout_steps(config, fetch_depth=2, pr=cadence != "nightly"), _restore_store(config), {
            "id": "route", "name": "Route jobs to runner pools", "env": env, "run": _invoke(config, f"route {flags}")},
            _hand_store_on(config)],
    }


# --- the durations store: restored before routing, handed to the stage jobs, merged and saved after
def _cache_key(config: Config) -> str:
    return f"{config.durations.transport.cache_key}-{_expr('github.run_id')}-{_expr('github.run_attempt')}"


def _restore_store(config: Config) -> dict[str, Any]:
    """The newest store of earlier runs (a prefix match; none is fine: est_time, with a warning)."""
    return {"name": "Restore the durations store", "uses": _uses(config, "cache_restore"), "continue-on-error": True,
            "with": {"path": config.durations.store_path, "key": _cache_key(config),
                     "restore-keys": f"{config.durations.transport.cache_key}-"}}


def _hand_store_on(config: Config) -> dict[str, Any]:
    """The stage jobs must plan on the very bytes the route job planned on: an artifact of this run."""
    transport = config.durations.transport
    return {"name": "Hand the store to the stage jobs", "if": _expr(f"steps.route.outputs.{DURATIONS_OUTPUT} == 'true'"),
            "uses": _uses(config, "upload_artifact"), "with": {"name": transport.store_artifact, "path": config.durations.store_path,
                                     "retention-days": transport.retention_days, "overwrite": True}}


def _stage_store_steps(config: Config) -> list[dict[str, Any]]:
    folder = config.durations.store_path.rpartition("/")[0] or "."
    return [{"name": "Fetch the store the route job planned on",
             "if": _expr(f"needs.route.outputs.{DURATIONS_OUTPUT} == 'true'"), "uses": _uses(config, "download_artifact"),
             "with": {"name": config.durations.transport.store_artifact, "path": folder}}]


def _upload_record(config: Config, suite: str) -> dict[str, Any]:
    transport = config.durations.transport
    return {"name": "Upload what this run measured", "if": _expr("always()"), "uses": _uses(config, "upload_artifact"),
            "with": {"name": f"{transport.records_artifact}-{suite}-{_expr('matrix.partition')}",
                     "path": f"{config.container.reports_dir}/*/durations.json", "if-no-files-found": "ignore",
                     "retention-days": transport.retention_days, "overwrite": True}}


def _upload_reports(config: Config, suite: str) -> dict[str, Any]:
    """The job's report folder, pass or fail: what `--replay DIR` needs once downloaded."""
    wf = config.workflows
    return {"name": "Upload the reports (for --replay)", "if": _expr("always()"), "uses": _uses(config, "upload_artifact"),
            "with": {"name": f"{wf.reports_artifact}-{suite}-{_expr('matrix.partition')}",
                     "path": f"{config.container.reports_dir}/", "if-no-files-found": "ignore",
                     "retention-days": wf.reports_retention_days, "overwrite": True}}


def _durations_job(config: Config, jobs: list[str]) -> dict[str, Any]:
    """After the stages: the newest store, plus every record of this run, saved under a run-unique
    key; then the drift report to the job summary. Advisory: never part of the verdict."""
    store = config.durations.store_path
    records = f"{store.rpartition('/')[0] or '.'}/records"
    transport = config.durations.transport
    return {
        "name": "durations",
        "needs": jobs,
        "if": _expr("always() && needs.route.result == 'success'"),
        "runs-on": config.workflows.route_runner,
        "timeout-minutes": config.workflows.route_timeout_minutes,
        "steps": [*_checkout_steps(config)[1:], _restore_store(config),
                  {"name": "Fetch this run's records", "uses": _uses(config, "download_artifact"), "continue-on-error": True,
                   "with": {"pattern": f"{transport.records_artifact}-*", "path": records}},
                  {"name": "Merge the records into the store",
                   "run": _invoke(config, f"durations update --from {records} --store {store}")},
                  {"name": "Save the durations store", "uses": _uses(config, "cache_save"), "continue-on-error": True,
                   "with": {"path": store, "key": _cache_key(config)}},
                  {"name": "Report duration drift", "run": _invoke(config, f"durations report --store {store} --markdown")}],
    }


def _stage_job(config: Config, stage: StageSpec, suite: str, needs: list[str]) -> dict[str, Any]:
    pr = not stage.nightly
    entry = f"{ROUTE}['{suite}']"
    session = stage.name.replace("-", "_")
    gate = f"!cancelled() && needs.route.result == 'success' && {entry}.run"
    if needs[1:]:  # cross-stage fast-fail: a failed earlier stage stops this one unless bypassed
        gate += " && (needs.route.outputs.bypass_fastfail == 'true' || !contains(needs.*.result, 'failure'))"
    return {
        "needs": needs,
        "if": _expr(gate),
        "name": _expr(f"format('{{0}} [{{1}}/{{2}}]', {entry}.name, matrix.partition, {entry}.total)"),
        "runs-on": _expr(f"{entry}.label"),
        "timeout-minutes": _expr(f"{entry}.timeout"),
        "strategy": {"fail-fast": False, "matrix": {"partition": _expr(f"{entry}.partitions")}},
        "steps": [
            *_checkout_steps(config, pr=pr),
            *_stage_store_steps(config),
            *_stage_steps(config, stage, suite, session, entry),
            _upload_record(config, suite),
            _upload_reports(config, suite),
        ],
    }


def _stage_steps(config: Config, stage: StageSpec, suite: str, session: str, entry: str) -> list[dict[str, Any]]:
    """The stage, its stop, and the retry rule (ci.outcome): the stage step writes its failure
    class to $GITHUB_OUTPUT and may fail without failing the job yet; an infrastructure failure
    runs the very same step once more (its result is the job's), anything else ends the job with
    the first run's own exit code. Tests are never retried; a cancelled run is not retried."""
    wf = config.workflows
    env = {
        **_registry_login_env(config, push=False),
        "HF_TOKEN": _expr(f"secrets.{wf.secrets.hf_token}"),
        IMAGE_ENV: _expr("inputs.image"),
        ROCM_ENV: _expr(f"inputs.rocm_version || '{wf.nightly_test_rocm if stage.nightly else wf.pr_test_rocm}'"),
        # Values reach the command through the environment, never spliced into its text.
        "JOB_ARCH": _expr(f"{entry}.arch"),
        "PARTITION": _expr("matrix.partition"),
        "PARTITIONS": _expr(f"{entry}.total"),
    }
    run = (f"nox -f {HOME}/noxfile.py -s {session} -- --arch \"$JOB_ARCH\" "
           f"--suite {suite} --partition \"$PARTITION/$PARTITIONS\""
           + _expr("needs.route.outputs.continue_on_error == 'true' && ' --continue-on-error' || ''")
           + _expr(f"needs.route.outputs.{DURATIONS_OUTPUT} == 'true' && "
                   f"' --durations {config.durations.store_path}' || ''"))
    first = f"steps.{STAGE_STEP}.outputs.{FAILURE_OUTPUT}"
    return [
        {"id": STAGE_STEP, "name": "Run the stage", "continue-on-error": True, "env": env, "run": run},
        {"name": "Stop the container", "if": _expr("always()"), "run": _invoke(config, "stop-container")},
        {"id": RETRY_STEP, "name": "Run the stage again (infrastructure failure)",
         "if": _expr(f"!cancelled() && {first} == 'infrastructure'"), "env": env, "run": run},
        {"name": "Stop the container after the retry", "if": _expr(f"always() && steps.{RETRY_STEP}.outcome != 'skipped'"),
         "run": _invoke(config, "stop-container")},
        {"name": "Fail on the stage's result (not retried)",
         "if": _expr(f"!cancelled() && steps.{STAGE_STEP}.outcome == 'failure' && {first} != 'infrastructure'"),
         "env": {"FAILURE_CLASS": _expr(first)}, "run": _invoke(config, 'verdict --failure-class "$FAILURE_CLASS"')},
    ]


def _finish_job(config: Config, jobs: list[str]) -> dict[str, Any]:
    """One required check for branch protection: fails when any job failed or was cancelled."""
    return {
        "name": "finish",  # the one required check: its name stays the job's id
        "needs": jobs,
        "if": _expr("always()"),
        "runs-on": config.workflows.route_runner,
        "timeout-minutes": config.workflows.route_timeout_minutes,
        "steps": [_setup_step(config), {
            "name": "Check every job's result", "env": {NEEDS_ENV: _expr("toJSON(needs)")},
            "run": _invoke(config, "finish")}],
    }


def _test_workflow(config: Config, cadence: str) -> dict[str, Any]:
    stages = [s for s in config.stages.values() if s.cadence == cadence]
    nightly = cadence == "nightly"
    jobs: dict[str, Any] = {"route": _route_job(config, cadence)}
    by_stage = {s.name: [j.suite for j in s.suites] for s in stages}
    for stage in stages:
        needs = ["route", *[suite for needed in stage.needs for suite in by_stage.get(needed, [])]]
        for job in stage.suites:
            jobs[job.suite] = _stage_job(config, stage, job.suite, needs)
    jobs["finish"] = _finish_job(config, [name for name in jobs if name != "route"] + ["route"])
    jobs["durations"] = _durations_job(config, ["route", *[name for name in jobs if name not in ("route", "finish")]])
    wf = config.workflows
    triggers: dict[str, Any] = {"workflow_dispatch": {"inputs": _dispatch_inputs(config, list(by_stage), nightly)}}
    if nightly:
        triggers = {"schedule": [{"cron": wf.nightly_test_schedule}], **triggers}
        concurrency = {"group": _expr("format('nightly-test-amd-{0}', github.run_id)"), "cancel-in-progress": False}
    else:
        triggers = {"pull_request": {"branches": list(wf.pr_branches)}, "schedule": [{"cron": wf.pr_test_schedule}],
                    **triggers}
        concurrency = {
            "group": _expr("github.event_name == 'pull_request' && format('pr-test-amd-{0}', github.ref) "
                           "|| format('pr-test-amd-{0}-{1}', github.event_name, github.run_id)"),
            "cancel-in-progress": _expr("github.event_name == 'pull_request'"),
        }
    return {
        "name": "Nightly Test (AMD)" if nightly else "PR Test (AMD)",
        "run-name": _expr("inputs.target_stage && format('[{0}] {1}', inputs.target_stage, "
                          + ("github.sha" if nightly else "inputs.pr_head_sha || github.sha") + ") || ''"),
        "on": triggers,
        "concurrency": concurrency,
        "permissions": {"contents": "read"},
        "jobs": jobs,
    }


def pr_test(config: Config) -> dict[str, Any]:
    return _test_workflow(config, "per-commit")


def nightly_test(config: Config) -> dict[str, Any]:
    return _test_workflow(config, "nightly")


def _registry_login_env(config: Config, push: bool) -> dict[str, str]:
    """The public registry login the toolkit reads (DOCKERHUB_AMD_USERNAME/TOKEN), from the pull-only
    secrets for jobs that run code under test, the push secrets only for publish jobs."""
    names = config.workflows.secrets
    user, token = (names.push_username, names.push_token) if push else (names.pull_username, names.pull_token)
    return {"DOCKERHUB_AMD_USERNAME": _expr(f"secrets.{user}"), "DOCKERHUB_AMD_TOKEN": _expr(f"secrets.{token}")}


def _nightly_job(config: Config, verb: str, task: str, title: str, runner: str, timeout: int) -> dict[str, Any]:
    """One job per (arch, ROCm) of the nightly matrix, running one invoke task, in the protected
    publish environment (its push secrets exist nowhere else) on the publish runners."""
    return {
        "name": _expr(f"format('{verb} {{0}} {{1}}', matrix.arch, matrix.rocm)"),
        "runs-on": runner,
        "environment": config.workflows.publish_environment,
        "timeout-minutes": timeout,
        "strategy": {"fail-fast": False, "matrix": {"include": [
            {"arch": b.arch, "rocm": b.rocm} for b in config.workflows.nightly_builds]}},
        "steps": [*_checkout_steps(config), {
            "name": title, "env": {**_registry_login_env(config, push=True),
                                   "BUILD_ARCH": _expr("matrix.arch"), "BUILD_ROCM": _expr("matrix.rocm")},
            "run": _invoke(config, f'{task} --arch "$BUILD_ARCH" --rocm "$BUILD_ROCM"')}],
    }


def nightly(config: Config) -> dict[str, Any]:
    wf = config.workflows
    mirror = _nightly_job(config, "mirror", "mirror-image", "Mirror the nightly image to the LAN registry",
                          wf.mirror_runner, wf.mirror_timeout_minutes)
    return {
        "name": "Release Docker AMD Nightly",
        "on": {"schedule": [{"cron": wf.nightly_schedule}], "workflow_dispatch": {}},
        "concurrency": {"group": "release-docker-amd-nightly", "cancel-in-progress": False},
        "permissions": {"contents": "read"},
        "jobs": {
            "build": _nightly_job(config, "build", "build-image", "Build and push the nightly image",
                                  wf.build_runner, wf.build_timeout_minutes),
            "mirror": {"needs": ["build"], **mirror},
        },
    }


def setup_action(config: Config) -> dict[str, Any]:
    """The composite action every job uses first: the toolkit copied under $RUNNER_TEMP (read-only),
    installed non-editable into its own virtualenv there; SGL_CI_HOME and PATH set for later steps.
    Nothing under the workspace, which the CI container mounts read-write, is ever run."""
    return {
        "name": "Set up the SGLang AMD CI toolkit",
        "description": "Install this toolkit outside the workspace: a read-only copy and its own virtualenv "
                       "under $RUNNER_TEMP, non-editable; later steps run only that.",
        "runs": {"using": "composite", "steps": [
            {"shell": "bash", "env": {"TOOLKIT_DIR": config.workflows.toolkit_install_dir},
             "run": 'python3 "$GITHUB_ACTION_PATH/../../../ci/setup_toolkit.py" --home "$RUNNER_TEMP/$TOOLKIT_DIR"'}]},
    }


class _NoAliases(yaml.SafeDumper):
    """Workflows are read by people and linters: every value written out, no &anchors/*aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(data: dict[str, Any], config: Config | None = None) -> str:
    text = HEADER + yaml.dump(data, Dumper=_NoAliases, sort_keys=False, width=1_000_000, default_flow_style=False)
    for pinned in (config.workflows.actions.values() if config else ()):  # the tag beside its SHA, for people
        text = text.replace(f"uses: {pinned.repository}@{pinned.sha}\n", f"uses: {pinned.repository}@{pinned.sha} # {pinned.version}\n")
    return text


def self_hosted_labels(config: Config) -> list[str]:
    """Every self-hosted runner label the workflows may use (actionlint must know them)."""
    labels = {a.pool.label.format(gpus=n) for a in config.arches.values() for n in a.pool.gpu_counts}
    return sorted(labels | {config.workflows.build_runner, config.workflows.mirror_runner})


def render(config: Config) -> dict[str, str]:
    """Relative path -> file content, for every file this renders."""
    return {
        PR_WORKFLOW: _dump(pr_test(config), config),
        NIGHTLY_WORKFLOW: _dump(nightly_test(config), config),
        ".github/workflows/release-docker-amd-nightly.yml": _dump(nightly(config), config),
        ".github/actions/setup-toolkit/action.yml": _dump(setup_action(config), config),
    }


def rendered_paths() -> tuple[str, ...]:
    """The test workflows: a change to one of them runs every job (change detection)."""
    return (PR_WORKFLOW, NIGHTLY_WORKFLOW)


def stale(config: Config, root: Path) -> list[str]:
    return [path for path, text in render(config).items()
            if not (root / path).exists() or (root / path).read_text() != text]


def write(config: Config, root: Path) -> list[str]:
    changed = stale(config, root)
    for path, text in render(config).items():
        if path in changed:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
    return changed
