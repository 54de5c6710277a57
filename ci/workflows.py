"""GitHub workflows rendered from config (`invoke workflows`), so runner labels, timeouts, stages
and partitions have one home; a test fails when the committed files differ from the rendering.
Every run step is one nox or invoke call; the arch and labels come from `invoke route`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ci.config import Config

HEADER = ("# Rendered by `invoke workflows` from config/*.yaml; edit config, not this file.\n"
          "# LOCAL_DOCKER_REGISTRY is set in each self-hosted runner's environment (its .env file):\n"
          "# the LAN mirror is a property of the runner's network, not of the workflow.\n")
ROUTE = "fromJSON(needs.route.outputs.jobs)"
# A boolean input only: no user text reaches the shell line.
CONTINUE_ON_ERROR = "${{ inputs.continue_on_error && ' --continue-on-error' || '' }}"


def _expr(text: str) -> str:
    return "${{ " + text + " }}"


def _checkout_steps(config: Config) -> list[dict[str, Any]]:
    wf = config.workflows
    return [
        {"uses": "actions/checkout@v4"},
        {"name": "Check out the CI toolkit", "uses": "actions/checkout@v4",
         "with": {"repository": wf.toolkit_repository, "ref": wf.toolkit_ref, "path": wf.toolkit_path}},
        {"name": "Install the CI toolkit", "uses": f"./{wf.toolkit_path}/.github/actions/setup-toolkit"},
    ]


def _invoke(config: Config, args: str) -> str:
    return f"invoke --search-root {config.workflows.toolkit_path} {args}"


def pr_test(config: Config) -> dict[str, Any]:
    wf = config.workflows
    arches = list(config.arches)
    jobs: dict[str, Any] = {
        "route": {
            "runs-on": wf.route_runner,
            "timeout-minutes": wf.route_timeout_minutes,
            "outputs": {"arch": _expr("steps.route.outputs.arch"), "jobs": _expr("steps.route.outputs.jobs")},
            "steps": [*_checkout_steps(config), {
                "id": "route", "name": "Route to a runner pool",
                "env": {"RUNNER_ARCH_INPUT": _expr("inputs.runner_arch")},
                "run": _invoke(config, 'route --event "$GITHUB_EVENT_NAME" --runner-arch "$RUNNER_ARCH_INPUT"')}],
        }
    }
    previous: list[str] = []
    for stage in config.stages.values():
        current = []
        for job in stage.suites:
            entry = f"{ROUTE}['{job.suite}']"
            name = stage.name.replace("-", "_")
            jobs[job.suite] = {
                "needs": ["route", *previous],
                "name": _expr(f"format('{{0}} [{{1}}/{{2}}]', {entry}.name, matrix.partition, {entry}.total)"),
                "runs-on": _expr(f"{entry}.label"),
                "timeout-minutes": _expr(f"{entry}.timeout"),
                "strategy": {"fail-fast": False, "matrix": {"partition": _expr(f"{entry}.partitions")}},
                "steps": [
                    *_checkout_steps(config),
                    {"name": "Run the stage", "env": {
                        **_registry_login_env(),
                        "HF_TOKEN": _expr("secrets.AMD_HF_TOKEN"),
                        "AMD_CI_IMAGE": _expr("inputs.image"),
                     },
                     "run": (f"nox -f {wf.toolkit_path}/noxfile.py -s {name} -- --arch {_expr('needs.route.outputs.arch')} "
                             f"--suite {job.suite} --partition {_expr('matrix.partition')}/{_expr(f'{entry}.total')}"
                             + CONTINUE_ON_ERROR)},
                    {"name": "Stop the container", "if": _expr("always()"), "run": _invoke(config, "stop-container")},
                ],
            }
            current.append(job.suite)
        previous = current
    return {
        "name": "PR Test (AMD)",
        "on": {
            "pull_request": {"branches": list(wf.pr_branches)},
            "schedule": [{"cron": wf.pr_test_schedule}],
            "workflow_dispatch": {"inputs": {
                "runner_arch": {"description": "Runner pool", "type": "choice", "options": arches,
                                "default": config.routing.default_input},
                "image": {"description": "Image override (default: newest nightly)", "type": "string", "default": ""},
                "continue_on_error": {"description": "Keep going after a failed file", "type": "boolean", "default": False},
            }},
        },
        "concurrency": {
            "group": _expr("github.event_name == 'pull_request' && format('pr-test-amd-{0}', github.ref) "
                           "|| format('pr-test-amd-{0}-{1}', github.event_name, github.run_id)"),
            "cancel-in-progress": _expr("github.event_name == 'pull_request'"),
        },
        "permissions": {"contents": "read"},
        "jobs": jobs,
    }


def _registry_login_env() -> dict[str, str]:
    return {"DOCKERHUB_AMD_USERNAME": _expr("secrets.DOCKERHUB_AMD_USERNAME"),
            "DOCKERHUB_AMD_TOKEN": _expr("secrets.DOCKERHUB_AMD_TOKEN")}


def _nightly_job(config: Config, verb: str, task: str, title: str, runner: str, timeout: int) -> dict[str, Any]:
    """One job per (arch, ROCm) of the nightly matrix, running one invoke task."""
    return {
        "name": _expr(f"format('{verb} {{0}} {{1}}', matrix.arch, matrix.rocm)"),
        "runs-on": runner,
        "timeout-minutes": timeout,
        "strategy": {"fail-fast": False, "matrix": {"include": [
            {"arch": b.arch, "rocm": b.rocm} for b in config.workflows.nightly_builds]}},
        "steps": [*_checkout_steps(config), {
            "name": title, "env": _registry_login_env(),
            "run": _invoke(config, f"{task} --arch {_expr('matrix.arch')} --rocm {_expr('matrix.rocm')}")}],
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


SETUP_ACTION = {
    "name": "Set up the SGLang AMD CI toolkit",
    "description": "Install this toolkit (nox, invoke and the ci library) into the runner's Python.",
    "runs": {"using": "composite", "steps": [
        {"shell": "bash", "run": 'python3 -m pip install --disable-pip-version-check -q -e "$GITHUB_ACTION_PATH/../../.."'}]},
}


def _dump(data: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(data, sort_keys=False, width=1_000_000, default_flow_style=False)


def self_hosted_labels(config: Config) -> list[str]:
    """Every self-hosted runner label the workflows may use (actionlint must know them)."""
    labels = {a.pool.label.format(gpus=n) for a in config.arches.values() for n in a.pool.gpu_counts}
    return sorted(labels | {config.workflows.build_runner, config.workflows.mirror_runner})


def render(config: Config) -> dict[str, str]:
    """Relative path -> file content, for every file this renders."""
    return {
        ".github/workflows/pr-test-amd.yml": _dump(pr_test(config)),
        ".github/workflows/release-docker-amd-nightly.yml": _dump(nightly(config)),
        ".github/actions/setup-toolkit/action.yml": _dump(SETUP_ACTION),
    }


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
