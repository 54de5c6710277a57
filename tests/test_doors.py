"""The doors as users type them: invoke and nox as real processes. Bad input: one stderr line,
exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import sys
import re

import pytest

from tests.conftest import base_env, run_door


def ours(stderr: str) -> list[str]:
    """stderr without nox's own progress lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("nox >")]


def test_invoke_route_prints_labels_and_writes_github_output(tmp_path):
    output = tmp_path / "out.txt"
    done = run_door("invoke", "route", "--event", "schedule", env=base_env(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(output)))
    assert done.code == 0, done.err
    assert "arch: mi325 (MI325X, gfx942) from schedule routing" in done.out
    assert re.search(r"stage-c-test-4-gpu-amd +linux-mi325-4gpu-sglang +partitions=1 +timeout=120m", done.out)
    written = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert written["arch"] == "mi325"
    assert json.loads(written["jobs"])["stage-a-test-1-gpu-small-amd"]["name"] == "stage-a-test-1-gpu-small-amd (linux-mi325-1gpu-sglang)"


def test_invoke_plan_for_an_event():
    done = run_door("invoke", "plan", "--event", "pull_request", "--stage", "stage-c")
    assert done.code == 0, done.err
    assert "stage stage-c on mi300" in done.out
    assert "arch from: pull_request routing" in done.out
    assert "stage timeout: 120 min" in done.out
    # No version in config: the plan says what the pull will look for, and needs no network.
    assert ("image: rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD> within 7 day(s), newest date then version; "
            "discovered at pull time from docker.io's tag list; versions override: none") in done.out
    assert "stage-c-test-large-8-gpu-amd (linux-mi300-8gpu-sglang): 8 GPU(s), 4 partition(s)" in done.out


def test_invoke_plan_lists_the_candidates_of_a_versions_override(tmp_path):
    override = tmp_path / "site.yaml"
    override.write_text("images: {versions: [v0.5.10, v0.5.9]}\n")
    done = run_door("invoke", "plan", "--arch", "mi355", "--stage", "stage-a", "--rocm", "rocm720",
                    env=base_env(SGL_CI_CONFIG_OVERRIDE=str(override)))
    assert done.code == 0, done.err
    assert "of 14 candidates from the versions override in config (v0.5.10, v0.5.9):" in done.out
    lines = [line.strip() for line in done.out.splitlines() if line.strip().startswith("rocm/sgl-dev:")]
    assert len(lines) == 14 and lines[0].startswith("rocm/sgl-dev:v0.5.10-rocm720-mi35x-")
    assert lines[1].startswith("rocm/sgl-dev:v0.5.9-rocm720-mi35x-")


def test_nox_stage_c_runs_only_the_requested_arch():
    done = run_door("nox", "-s", "stage_c", "--", "--arch", "mi300", "--dry-run")
    assert done.code == 0, done.err
    assert "stage stage-c on mi300" in done.out
    assert "stage stage-c on mi325" not in done.out
    assert "stage_c(runner_arch='mi325') skipped: runner_arch mi325 is not this run's arch mi300 (from --arch)" in done.err
    assert "stage_c(runner_arch='mi355') skipped" in done.err


def test_nox_detects_the_arch_when_none_is_given():
    done = run_door("nox", "-s", "stage_b", "--", "--dry-run", env=base_env(RUNNER_NAME="linux-mi35x-gpu-1-abc"))
    assert done.code == 0, done.err
    assert "stage stage-b on mi355" in done.out
    assert "arch from: RUNNER_NAME linux-mi35x-gpu-1-abc" in done.out
    assert "stage_b(runner_arch='mi300') skipped" in done.err


def _broken_config(config_dir, filename, old, new):
    path = config_dir / filename
    path.write_text(path.read_text().replace(old, new, 1))
    return base_env(SGL_CI_CONFIG_DIR=str(config_dir))


# Python and the shell tools, but not /opt/rocm/bin: no amd-smi/rocm-smi/rocminfo to find a GPU.
NO_SMI_PATH = f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"

BAD_INPUTS = [
    ("unknown arch", ("invoke", "plan", "--arch", "mi999"), None, "unknown arch 'mi999' (allowed: mi300, mi325, mi355)"),
    ("unknown stage", ("invoke", "plan", "--stage", "stage-z"), None, "unknown stage 'stage-z' (allowed: stage-a, stage-b, stage-c)"),
    ("unknown event", ("invoke", "route", "--event", "push"), None, "unknown event 'push' (allowed: pull_request"),
    ("unknown arch in nox", ("nox", "-s", "stage_c", "--", "--arch", "mi999", "--dry-run"), None, "unknown arch 'mi999'"),
    ("unknown nox option", ("nox", "-s", "stage_a", "--", "--arch", "mi300", "--frobnicate"), None, "unrecognized arguments: --frobnicate"),
    ("unknown suite", ("nox", "-s", "stage_c", "--", "--arch", "mi300", "--suite", "nope", "--dry-run"), None, "unknown suite 'nope' for stage-c"),
    ("bad RUNNER_ARCH", ("nox", "-s", "stage_a", "--", "--dry-run"), {"RUNNER_ARCH": "gfx942"}, "RUNNER_ARCH='gfx942' is not a known arch"),
    ("bad LOCAL_DOCKER_REGISTRY", ("invoke", "plan"), {"LOCAL_DOCKER_REGISTRY": "http://mirror"}, "LOCAL_DOCKER_REGISTRY='http://mirror' is not a registry address"),
    ("unknown ROCm", ("invoke", "plan", "--arch", "mi300", "--rocm", "rocm999"), None, "unknown ROCm version 'rocm999' (allowed: rocm700"),
    ("bad image name", ("invoke", "plan", "--arch", "mi300", "--image", "Not An Image"), None, "is not an image name"),
    ("runner arch on a fixed event", ("invoke", "route", "--event", "pull_request", "--runner-arch", "mi355"), None, "applies only to workflow_dispatch"),
    ("no arch anywhere", ("nox", "-s", "stage_a", "--", "--dry-run"), {"PATH": NO_SMI_PATH}, "cannot tell the arch"),
]


@pytest.mark.parametrize("argv, env, expected", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(argv, env, expected):
    done = run_door(*argv, env=base_env(**(env or {})))
    lines = ours(done.err)
    assert done.code == 2, (done.code, done.err)
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "Traceback" not in done.err + done.out


BAD_CONFIGS = [
    ("malformed YAML", "stages.yaml", "per_file_timeout_s: 5400", "per_file_timeout_s: [5400", "malformed YAML"),
    ("wrong type", "pull.yaml", "attempts: 6", "attempts: six", "public.attempts: must be an integer"),
    ("unknown key", "images.yaml", "lookback_days: 7", "lookback_dayz: 7", "unknown key 'lookback_dayz'"),
    ("timeout <= 0", "stages.yaml", "{default: 30}", "{default: 0}", "stage-a.timeout_minutes.default: must be > 0, got 0"),
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
