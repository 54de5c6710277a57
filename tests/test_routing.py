"""Runner routing: events to arch pools (several per event), each job on the first of them it
lists, labels and job names, partition counts for auto jobs, and the GitHub outputs."""

from __future__ import annotations

import json

import pytest

from ci.config import AUTO, load_config
from ci.errors import UserError
from ci.routing import arches_for_event, render_route, route, route_outputs, runner_label

CONFIG = load_config(env={})


def auto_counts(config, count: int = 3) -> dict[tuple[str, str], int]:
    """A partition count for every (auto job, arch): what the tree would size."""
    return {(job.suite, arch): count for stage in config.stages.values() for job in stage.suites
            if job.partitions == AUTO for arch in job.arches}


COUNTS = auto_counts(CONFIG)


@pytest.mark.parametrize(
    "event, runner_arch, arches",
    [
        ("pull_request", None, ["mi300", "mi355"]),
        ("pull_request", "", ["mi300", "mi355"]),
        ("schedule", None, ["mi325", "mi355"]),
        ("workflow_dispatch", None, ["mi300", "mi355"]),
        ("workflow_dispatch", "mi325", ["mi325", "mi355"]),
        ("workflow_call", "mi325", ["mi325", "mi355"]),
        ("workflow_call", "mi300", ["mi300", "mi355"]),
    ],
)
def test_events_route_to_pools(event, runner_arch, arches):
    result = route(CONFIG, event, runner_arch, COUNTS)
    assert [a.name for a in result.arches] == arches


@pytest.mark.parametrize("event, runner_arch", [("pull_request", None), ("schedule", None), ("workflow_dispatch", "mi325")])
@pytest.mark.parametrize("cadence", ["per-commit", "nightly"])
def test_every_job_of_the_cadence_runs_once_on_the_first_event_arch_it_lists(event, runner_arch, cadence):
    result = route(CONFIG, event, runner_arch, COUNTS, cadence)
    arches = [a.name for a in result.arches]
    expected = {job.suite: next(a for a in arches if a in job.arches)
                for stage in CONFIG.stages.values() if stage.cadence == cadence
                for job in stage.suites if set(job.arches) & set(arches)}
    assert {j.suite: j.arch for j in result.jobs} == expected
    assert len(result.jobs) == len(expected)  # no suite twice
    assert {j.stage for j in result.jobs} == {s.name for s in CONFIG.stages.values() if s.cadence == cadence}
    # Both pools get work on a pull request: the MI30x suites and the MI35x suites.
    assert {j.arch for j in result.jobs} == set(arches)


def test_labels_and_job_names():
    jobs = {j.suite: j for j in route(CONFIG, "pull_request", counts=COUNTS).jobs}
    assert jobs["stage-a-test-1-gpu-small-amd"].job_name == "stage-a-test-1-gpu-small-amd (linux-mi300-1gpu-sglang)"
    assert jobs["stage-c-test-4-gpu-amd"].label == "linux-mi300-4gpu-sglang"
    assert jobs["stage-c-test-4-gpu-amd"].timeout_minutes == 90 + 30  # step budget + job setup
    assert jobs["stage-c-test-large-8-gpu-amd-mi35x"].label == "linux-mi35x-gpu-8"
    assert jobs["stage-c-test-large-8-gpu-amd-mi35x"].arch == "mi355"
    assert jobs["stage-b-test-large-8-gpu-mi35x-disaggregation-amd"].label == "linux-mi35x-gpu-8.fabric"
    assert jobs["stage-b-test-1-gpu-small-amd"].timeout_minutes == 75 + 30  # MI300X's own step budget
    scheduled = {j.suite: j for j in route(CONFIG, "schedule", counts=COUNTS).jobs}
    assert scheduled["stage-b-test-1-gpu-small-amd"].timeout_minutes == 60 + 30
    assert scheduled["stage-b-test-1-gpu-small-amd"].label == "linux-mi325-1gpu-sglang"


def test_fixed_counts_come_from_config_and_auto_counts_from_the_tree():
    jobs = {j.suite: j for j in route(CONFIG, "schedule", counts=COUNTS).jobs}
    assert jobs["stage-b-test-1-gpu-small-amd"].partitions == 14
    assert jobs["stage-b-test-2-gpu-large-amd"].partitions == 3  # auto: whatever the sizing said
    sized = {**COUNTS, ("stage-b-test-2-gpu-large-amd", "mi325"): 5}
    assert {j.suite: j for j in route(CONFIG, "schedule", counts=sized).jobs}["stage-b-test-2-gpu-large-amd"].partitions == 5


def test_auto_jobs_need_the_tree_to_size_them():
    with pytest.raises(UserError, match="stage-b-test-2-gpu-large-amd: partitions: auto needs the test tree"):
        route(CONFIG, "pull_request")


def test_mi35x_pool_rounds_up_to_an_existing_size():
    arch = CONFIG.arches["mi355"]
    assert runner_label(arch, 1) == "linux-mi35x-gpu-1"
    assert runner_label(arch, 2) == "linux-mi35x-gpu-2"
    assert runner_label(arch, 4) == "linux-mi35x-gpu-8"
    assert runner_label(arch, 8, ".fabric") == "linux-mi35x-gpu-8.fabric"
    assert runner_label(CONFIG.arches["mi300"], 3) == "linux-mi300-4gpu-sglang"
    with pytest.raises(UserError, match="no mi355 runner pool has 16 GPUs"):
        runner_label(arch, 16)


def test_outputs_carry_arches_labels_and_partitions():
    outputs = route_outputs(route(CONFIG, "workflow_dispatch", "mi325", COUNTS))
    jobs = json.loads(outputs["jobs"])
    assert outputs["arches"] == "mi325,mi355"
    assert jobs["stage-b-test-1-gpu-small-amd"]["partitions"] == list(range(1, 15))
    assert jobs["stage-b-test-1-gpu-small-amd"]["total"] == 14
    assert jobs["stage-c-test-large-8-gpu-amd"]["label"] == "linux-mi325-8gpu-sglang"
    assert jobs["stage-c-test-large-8-gpu-amd"]["arch"] == "mi325"
    assert jobs["stage-c-test-large-8-gpu-amd-mi35x"] == {
        "arch": "mi355", "run": True, "label": "linux-mi35x-gpu-8", "name": "stage-c-test-large-8-gpu-amd-mi35x (linux-mi35x-gpu-8)",
        "timeout": 120 + 30, "partitions": [1, 2, 3], "total": 3}


def test_render_names_every_arch_and_job():
    lines = render_route(route(CONFIG, "pull_request", counts=COUNTS))
    assert lines[0] == "arches: mi300 (MI300X, gfx942), mi355 (MI355X, gfx950) from pull_request routing"
    assert len(lines) == 1 + len(route(CONFIG, "pull_request", counts=COUNTS).jobs) + 1
    assert lines[-1] == "continue-on-error: no; fast-fail bypassed: no"
    _, source = arches_for_event(CONFIG, "workflow_dispatch", None)
    assert source == "workflow_dispatch routing (runner_arch mi300, the default)"


def test_fixed_events_refuse_a_runner_arch():
    with pytest.raises(UserError, match="applies only to workflow_dispatch, workflow_call; event schedule routes to mi325, mi355"):
        route(CONFIG, "schedule", "mi300", COUNTS)


def test_the_input_names_only_an_input_pool():
    with pytest.raises(UserError, match=r"--runner-arch 'mi355': not a pool the input may choose \(allowed: mi300, mi325\)"):
        route(CONFIG, "workflow_dispatch", "mi355", COUNTS)


def test_unknown_event():
    with pytest.raises(UserError, match="unknown event 'push' \\(allowed: pull_request, schedule"):
        route(CONFIG, "push")
