"""The doors as users type them: invoke and nox as real processes. Bad input: one stderr line,
exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from tests.conftest import base_env, run_door


def ours(stderr: str) -> list[str]:
    """stderr without nox's own progress lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("nox >")]


@pytest.fixture
def workspace(tmp_path):
    """A workspace with an empty test tree: the doors plan the shipped jobs with nothing in them
    (auto jobs size to one partition). The real tree is tests/test_real_tree.py's."""
    (tmp_path / "ws" / "test" / "registered").mkdir(parents=True)
    return tmp_path / "ws"


def test_invoke_route_prints_labels_and_writes_github_output(tmp_path, workspace):
    output = tmp_path / "out.txt"
    done = run_door("invoke", "route", "--event", "schedule",
                    env=base_env(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(output), GITHUB_WORKSPACE=str(workspace)))
    assert done.code == 0, done.err
    assert "arches: mi325 (MI325X, gfx942), mi355 (MI355X, gfx950) from schedule routing" in done.out
    assert re.search(r"stage-c-test-4-gpu-amd +linux-mi325-4gpu-sglang +partitions=1 +timeout=120m", done.out)
    assert re.search(r"stage-c-test-large-8-gpu-amd-mi35x +linux-mi35x-gpu-8 +partitions=1 +timeout=150m", done.out)
    assert "nightly-" not in done.out  # per-commit stages only
    written = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert written["arches"] == "mi325,mi355"
    jobs = json.loads(written["jobs"])
    assert jobs["stage-a-test-1-gpu-small-amd"]["name"] == "stage-a-test-1-gpu-small-amd (linux-mi325-1gpu-sglang)"
    assert jobs["stage-b-test-1-gpu-small-amd-mi35x"]["arch"] == "mi355"
    assert "wrote arches, jobs, continue_on_error, bypass_fastfail and durations to $GITHUB_OUTPUT" in done.out


def test_invoke_plan_for_an_event(workspace):
    done = run_door("invoke", "plan", "--event", "pull_request", "--stage", "stage-c",
                    env=base_env(GITHUB_WORKSPACE=str(workspace)))
    assert done.code == 0, done.err
    assert "stage stage-c on mi300" in done.out
    assert "arch from: pull_request routing" in done.out
    # No version in config: the plan says what the pull will look for, and needs no network.
    assert ("image: rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD> within 7 day(s), newest date then version; "
            "discovered at pull time from docker.io's tag list; versions override: none") in done.out
    assert "job stage-c-test-large-8-gpu-amd (linux-mi300-8gpu-sglang): 8 GPU(s), 4 partition(s)" in done.out
    assert "step 120 min, job timeout 150 min" in done.out


def test_invoke_plan_lists_the_candidates_of_a_versions_override(tmp_path, workspace):
    override = tmp_path / "site.yaml"
    override.write_text("images: {versions: [v0.5.10, v0.5.9]}\n")
    done = run_door("invoke", "plan", "--arch", "mi300", "--stage", "stage-a", "--rocm", "rocm720",
                    env=base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(workspace)))
    assert done.code == 0, done.err
    assert "of 14 candidates from the versions override in config (v0.5.10, v0.5.9):" in done.out
    lines = [line.strip() for line in done.out.splitlines() if line.strip().startswith("rocm/sgl-dev:")]
    assert len(lines) == 14 and lines[0].startswith("rocm/sgl-dev:v0.5.10-rocm720-mi30x-")
    assert lines[1].startswith("rocm/sgl-dev:v0.5.9-rocm720-mi30x-")


def test_nox_stage_c_runs_only_the_requested_arch(workspace):
    done = run_door("nox", "-s", "stage_c", "--", "--arch", "mi300", "--dry-run", env=base_env(GITHUB_WORKSPACE=str(workspace)))
    assert done.code == 0, done.err
    assert "stage stage-c on mi300" in done.out
    assert "stage stage-c on mi325" not in done.out and "stage stage-c on mi355" not in done.out
    assert "stage_c(runner_arch='mi325') skipped: runner_arch mi325 is not this run's arch mi300 (from --arch)" in done.err
    assert "stage_c(runner_arch='mi355') skipped" in done.err


def test_nox_detects_the_arch_when_none_is_given(workspace):
    done = run_door("nox", "-s", "stage_b", "--", "--dry-run",
                    env=base_env(RUNNER_NAME="linux-mi35x-gpu-1-abc", GITHUB_WORKSPACE=str(workspace)))
    assert done.code == 0, done.err
    assert "stage stage-b on mi355" in done.out
    assert "arch from: RUNNER_NAME linux-mi35x-gpu-1-abc" in done.out
    assert "job stage-b-test-1-gpu-small-amd-mi35x (linux-mi35x-gpu-1)" in done.out
    assert "stage_b(runner_arch='mi300') skipped" in done.err


def test_nox_lists_a_session_per_stage_with_its_description():
    done = run_door("nox", "-l")
    assert done.code == 0, done.err
    for session in ("stage_a", "stage_b", "stage_c", "extra", "nightly"):
        assert f"{session}(runner_arch='mi300')" in done.out and f"{session}(runner_arch='mi355')" in done.out
    assert "Nightly: every nightly AMD suite SGLang schedules" in done.out


def test_a_stage_with_no_job_on_the_arch_plans_nothing(workspace):
    done = run_door("nox", "-s", "stage_a", "--", "--arch", "mi355", "--dry-run", env=base_env(GITHUB_WORKSPACE=str(workspace)))
    assert done.code == 0, done.err
    assert "stage stage-a: no job runs on mi355 (its jobs run on mi300, mi325): nothing to plan" in done.out


def _broken_config(config_dir, filename, old, new):
    path = config_dir / filename
    path.write_text(path.read_text().replace(old, new, 1))
    return base_env(SGL_CI_CONFIG_DIR=str(config_dir))


# Python and the shell tools, but not /opt/rocm/bin: no amd-smi/rocm-smi/rocminfo to find a GPU.
NO_SMI_PATH = f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"

BAD_INPUTS = [
    ("unknown arch", ("invoke", "plan", "--arch", "mi999"), None, "unknown arch 'mi999' (allowed: mi300, mi325, mi355)"),
    ("unknown stage", ("invoke", "plan", "--stage", "stage-z"), None, "unknown stage 'stage-z' (allowed: stage-a, stage-b, stage-c, extra, nightly)"),
    ("unknown event", ("invoke", "route", "--event", "push"), None, "unknown event 'push' (allowed: pull_request"),
    ("unknown arch in nox", ("nox", "-s", "stage_c", "--", "--arch", "mi999", "--dry-run"), None, "unknown arch 'mi999'"),
    ("unknown nox option", ("nox", "-s", "stage_a", "--", "--arch", "mi300", "--frobnicate"), None, "unrecognized arguments: --frobnicate"),
    ("unknown suite", ("nox", "-s", "stage_c", "--", "--arch", "mi300", "--suite", "nope", "--dry-run"), None, "unknown suite 'nope' for stage-c"),
    ("bad RUNNER_ARCH", ("nox", "-s", "stage_a", "--", "--dry-run"), {"RUNNER_ARCH": "gfx942"}, "RUNNER_ARCH='gfx942' is not a known arch"),
    ("bad LOCAL_DOCKER_REGISTRY", ("invoke", "plan"), {"LOCAL_DOCKER_REGISTRY": "http://mirror"}, "LOCAL_DOCKER_REGISTRY='http://mirror' is not a registry address"),
    ("unknown ROCm", ("invoke", "plan", "--arch", "mi300", "--rocm", "rocm999"), None, "unknown ROCm version 'rocm999' (allowed: rocm700"),
    ("bad image name", ("invoke", "plan", "--arch", "mi300", "--image", "Not An Image"), None, "is not an image name"),
    ("runner arch on a fixed event", ("invoke", "route", "--event", "pull_request", "--runner-arch", "mi355"), None, "applies only to workflow_dispatch"),
    ("runner arch not an input pool", ("invoke", "route", "--event", "workflow_dispatch", "--runner-arch", "mi355"), None,
     "--runner-arch 'mi355': not a pool the input may choose (allowed: mi300, mi325)"),
    ("partition and no suite", ("nox", "-s", "stage_b", "--", "--arch", "mi300", "--partition", "1/14", "--dry-run"), None,
     "--partition needs --suite: stage-b has"),
    ("suite on another arch", ("nox", "-s", "stage_b", "--", "--arch", "mi300", "--suite", "stage-b-test-1-gpu-small-amd-mi35x", "--dry-run"),
     None, "suite 'stage-b-test-1-gpu-small-amd-mi35x' does not run on mi300 (its arches: mi355)"),
    ("no arch anywhere", ("nox", "-s", "stage_a", "--", "--dry-run"), {"PATH": NO_SMI_PATH}, "cannot tell the arch"),
]


@pytest.mark.parametrize("argv, env, expected", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(workspace, argv, env, expected):
    done = run_door(*argv, env=base_env(GITHUB_WORKSPACE=str(workspace), **(env or {})))
    lines = ours(done.err)
    assert done.code == 2, (done.code, done.err)
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "Traceback" not in done.err + done.out


@pytest.mark.parametrize("door", [("invoke", "plan", "--arch", "mi300"), ("nox", "-s", "stage_a", "--", "--arch", "mi300", "--dry-run"),
                                  ("invoke", "route", "--event", "pull_request")], ids=["plan", "nox", "route"])
def test_no_test_tree_is_one_line_and_exit_2(tmp_path, door):
    done = run_door(*door, env=base_env(GITHUB_WORKSPACE=str(tmp_path)))
    assert done.code == 2, done.err
    assert ours(done.err) == [f"error: test root {tmp_path / 'test' / 'registered'} is not a directory (set GITHUB_WORKSPACE "
                              f"to the SGLang checkout, or --test-root; config suites.test_root is relative to the workspace)"]


BAD_CONFIGS = [
    ("malformed YAML", "stages.yaml", "per_file_timeout_s: {default: 5400}", "per_file_timeout_s: [5400", "malformed YAML"),
    ("wrong type", "pull.yaml", "attempts: 6", "attempts: six", "public.attempts: must be an integer"),
    ("unknown key", "images.yaml", "lookback_days: 7", "lookback_dayz: 7", "unknown key 'lookback_dayz'"),
    ("timeout <= 0", "stages.yaml", "timeout_minutes: {default: 30}", "timeout_minutes: {default: 0}",
     "stage-a.suites[0].timeout_minutes.default: must be > 0, got 0"),
    ("partitions not a count", "stages.yaml", "partitions: 14,", "partitions: some,",
     "stage-b.suites[0].partitions: must be one of an integer > 0, auto, got 'some'"),
]


@pytest.mark.parametrize("filename, old, new, expected", [b[1:] for b in BAD_CONFIGS], ids=[b[0] for b in BAD_CONFIGS])
@pytest.mark.parametrize("door", [("invoke", "route", "--event", "schedule"), ("nox", "-s", "stage_c", "--", "--arch", "mi300", "--dry-run")],
                         ids=["invoke", "nox"])
def test_bad_config_through_each_door(config_dir, door, filename, old, new, expected):
    done = run_door(*door, env=_broken_config(config_dir, filename, old, new))
    lines = ours(done.err)
    assert done.code == 2, done.err
    assert len(lines) == 1 and expected in lines[0] and str(config_dir / filename) + ":" in lines[0], lines
    assert "Traceback" not in done.err
