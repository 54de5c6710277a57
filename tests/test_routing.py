"""Runner routing: events to pools, labels and job names, and the GitHub outputs."""

from __future__ import annotations

import json

import pytest

from ci.config import load_config
from ci.errors import UserError
from ci.routing import route, route_outputs, runner_label

CONFIG = load_config(env={})


@pytest.mark.parametrize(
    "event, runner_arch, arch",
    [
        ("pull_request", None, "mi300"),
        ("pull_request", "", "mi300"),
        ("schedule", None, "mi325"),
        ("workflow_dispatch", None, "mi300"),
        ("workflow_dispatch", "mi355", "mi355"),
        ("workflow_call", "mi325", "mi325"),
    ],
)
def test_events_route_to_pools(event, runner_arch, arch):
    assert route(CONFIG, event, runner_arch).arch.name == arch


def test_labels_and_job_names():
    jobs = {j.suite: j for j in route(CONFIG, "pull_request").jobs}
    assert jobs["stage-a-test-1-gpu-small-amd"].job_name == "stage-a-test-1-gpu-small-amd (linux-mi300-1gpu-sglang)"
    assert jobs["stage-c-test-4-gpu-amd"].label == "linux-mi300-4gpu-sglang"
    assert jobs["stage-c-test-4-gpu-amd"].timeout_minutes == 120 + 30
    scheduled = {j.suite: j for j in route(CONFIG, "schedule").jobs}
    assert scheduled["stage-c-test-4-gpu-amd"].timeout_minutes == 90 + 30


def test_mi35x_pool_rounds_up_to_an_existing_size():
    arch = CONFIG.arches["mi355"]
    assert runner_label(arch, 1) == "linux-mi35x-gpu-1"
    assert runner_label(arch, 2) == "linux-mi35x-gpu-8"
    with pytest.raises(UserError, match="no mi355 runner pool has 16 GPUs"):
        runner_label(arch, 16)


def test_outputs_carry_labels_and_partitions():
    outputs = route_outputs(route(CONFIG, "workflow_dispatch", "mi325"))
    jobs = json.loads(outputs["jobs"])
    assert outputs["arch"] == "mi325"
    assert jobs["stage-b-test-1-gpu-small-amd"]["partitions"] == list(range(1, 15))
    assert jobs["stage-c-test-large-8-gpu-amd"]["label"] == "linux-mi325-8gpu-sglang"


def test_fixed_events_refuse_a_runner_arch():
    with pytest.raises(UserError, match="event schedule always routes to mi325"):
        route(CONFIG, "schedule", "mi300")


def test_unknown_event():
    with pytest.raises(UserError, match="unknown event 'push' \\(allowed: pull_request, schedule"):
        route(CONFIG, "push")
