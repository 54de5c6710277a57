"""Change detection and job selection (pure): globs, filters, targets, labels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ci.changes import Selection, job_runs, matched_filters, matches, parse_targets
from ci.config import load_config
from ci.errors import UserError

CONFIG = load_config(env={})
FILTERS = CONFIG.workflows.change_filters


@pytest.mark.parametrize("path, expected", [
    ("python/sglang/srt/managers/scheduler.py", {"main_package"}),
    ("python/sglang/srt/README.md", set()),
    ("python/sglang/multimodal_gen/runtime/x.py", {"multimodal_gen"}),
    ("python/sglang/kernels/aot/csrc/moe.cu", {"sgl_kernel"}),
    ("python/sglang/kernels/ops/moe/topk.py", {"main_package", "jit_kernel"}),
    ("python/sglang/kernels/ops/diffusion/vae.py", {"main_package", "jit_kernel", "multimodal_gen"}),
    ("test/registered/kernels/ops/moe/test_x.py", {"main_package", "jit_kernel"}),
    ("python/pyproject_rocm.toml", {"main_package", "multimodal_gen"}),
    ("docs/index.md", set()),
    ("scripts/ci/amd/amd_ci_exec.sh", {"main_package"}),
    ("scripts/ci/amd/sub/deeper.sh", set()),  # `*` stays within one folder
])
def test_shipped_filters_match_as_sglang_means_them(path, expected):
    assert matched_filters(FILTERS, [path]) == expected


def test_a_change_to_the_workflow_runs_everything():
    assert matched_filters(FILTERS, ["README.md", ".github/workflows/pr-test-amd.yml"],
                           [".github/workflows/pr-test-amd.yml"]) == set(FILTERS)


segment = st.text(alphabet="abcxyz_.", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
paths = st.lists(segment, min_size=1, max_size=5).map("/".join)


@given(paths)
def test_double_star_matches_any_depth_and_single_star_one_segment(path):
    assert matches(["**"], path)
    assert matches(["*"], path) == ("/" not in path)
    assert matches(["**/" + path.rsplit("/", 1)[-1]], path)


@given(paths, paths)
def test_an_exclusion_always_wins_and_plain_paths_match_only_themselves(path, other):
    assert not matches(["**", "!" + path], path)
    assert matches([path], path)
    assert matches([path], other) == (other == path)


def stage_job(stage_name, suite):
    stage = CONFIG.stage(stage_name)
    return stage, stage.job(suite)


def test_targets_labels_and_changes_select_jobs():
    stage, job = stage_job("stage-b", "stage-b-test-1-gpu-small-amd")
    assert job_runs(stage, job, Selection("pull_request", changed=frozenset({"main_package"})))[0]
    assert job_runs(stage, job, Selection("pull_request", changed=frozenset({"jit_kernel"}))) == (False, "no change matches main_package")
    assert job_runs(stage, job, Selection("pull_request", changed=frozenset(), run_all=True))[0]
    assert job_runs(stage, job, Selection("schedule", changed=frozenset()))[0]
    assert job_runs(stage, job, Selection("workflow_dispatch", targets=frozenset({"stage-b"})))[0]
    assert not job_runs(stage, job, Selection("workflow_dispatch", targets=frozenset({"stage-c"})))[0]
    extra, extra_job = stage_job("extra", "extra-a-test-1-gpu-small-amd")
    assert job_runs(extra, extra_job, Selection("pull_request")) == (False, "needs the run-ci-extra label")
    assert job_runs(extra, extra_job, Selection("pull_request", labels=frozenset({"run-ci-extra"})))[0]
    assert job_runs(extra, extra_job, Selection("schedule"))[0]


def test_unknown_targets_are_one_clear_error():
    assert parse_targets(CONFIG, " stage-a , stage-c-test-4-gpu-amd,") == {"stage-a", "stage-c-test-4-gpu-amd"}
    with pytest.raises(UserError, match="--target stage-z: not a stage or suite"):
        parse_targets(CONFIG, "stage-a,stage-z")
