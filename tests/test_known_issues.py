"""The known-issues plugin run for real through pytest (pytester) on generated test files, for
several arches: skips and strict xfails apply to the listed arch only, a passing xfail says the
issue looks fixed, expired entries warn loudly."""

from __future__ import annotations

import datetime as dt

import pytest

from ci.config import KnownIssue, load_config
from ci.known_issues import matching
from tests.conftest import ROOT

KERNEL_TEST = """
import pytest

@pytest.mark.parametrize("tokens, experts, topk", [(2048, 32, 4), (2048, 32, 2), (16, 8, 1)])
def test_topk_sigmoid_exact_indices(tokens, experts, topk):
    assert (tokens, experts, topk) != (2048, 32, 4) or BROKEN

def test_topk_sigmoid():
    pass
"""

SAMPLING_TEST = """
import unittest

class TestPyTorchSamplingBackend(unittest.TestCase):
    def test_greedy(self):
        self.assertTrue(False, "not bit-identical")

    def test_mmlu(self):
        pass
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.delenv("SGL_CI_ARCH", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the code under test, whatever is installed
    pytester.mkpydir("sgl-kernel")
    pytester.path.joinpath("sgl-kernel", "test_moe_topk_sigmoid.py").write_text(KERNEL_TEST.replace("BROKEN", "False"))
    sampling = pytester.path / "test" / "registered" / "sampling"
    sampling.mkdir(parents=True)
    (sampling / "test_pytorch_sampling_backend.py").write_text(SAMPLING_TEST)
    return pytester


def run(pytester, arch: str, *extra: str):
    return pytester.runpytest_subprocess("-p", "ci.known_issues", "--sgl-arch", arch, "-rsxX", "--sgl-today", "2026-11-26", *extra)


def test_mi300_skips_and_xfails_what_config_says(suite):
    result = run(suite, "mi300")
    result.assert_outcomes(passed=4, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*known issues applied on mi300*",
        "xfail: *test_topk_sigmoid_exact_indices[[]2048-32-4[]]*",
        "skip: *TestPyTorchSamplingBackend::test_greedy*",
        "*SKIPPED*known issue on mi300: greedy decoding is not bit-identical*pull/23156*",
        "*XFAIL*test_topk_sigmoid_exact_indices[[]2048-32-4[]]*known issue on mi300*",
    ])
    assert result.ret == 0


@pytest.mark.parametrize("arch", ["mi325", "mi355"])
def test_other_arches_keep_running_them(suite, arch):
    result = run(suite, arch)
    result.assert_outcomes(passed=4, failed=2)  # the real failures show on arches without the issue
    assert "known issue" not in result.stdout.str()


def test_a_known_issue_that_passes_says_it_looks_fixed(suite):
    suite.path.joinpath("sgl-kernel", "test_moe_topk_sigmoid.py").write_text(KERNEL_TEST.replace("BROKEN", "True"))
    result = run(suite, "mi300")
    result.assert_outcomes(passed=4, skipped=1, failed=1)
    result.stdout.fnmatch_lines([
        "*XPASS(strict)*known issue looks fixed on mi300*test_topk_sigmoid_exact_indices[[]2048-32-4[]]*",
        "LOOKS FIXED: *test_topk_sigmoid_exact_indices[[]2048-32-4[]] passed on mi300*",
    ])
    assert result.ret == 1


def test_expired_entries_warn_loudly(suite):
    result = run(suite, "mi300", "--sgl-today", "2027-04-01")
    result.stdout.fnmatch_lines(["*EXPIRED known issue*test_greedy*expired 2027-03-31*", "EXPIRED known issue: *test_greedy*"])


def test_arch_is_required_and_checked(suite):
    result = suite.runpytest_subprocess("-p", "ci.known_issues")
    assert result.ret != 0 and "needs --sgl-arch or SGL_CI_ARCH" in result.stderr.str()
    result = run(suite, "mi999")
    assert result.ret != 0 and "unknown arch 'mi999'" in (result.stderr.str() + result.stdout.str())


@pytest.mark.parametrize(
    "nodeid, hit",
    [
        ("sgl-kernel/test_moe_topk_sigmoid.py::test_topk_sigmoid_exact_indices[2048-32-4]", True),
        ("test_moe_topk_sigmoid.py::test_topk_sigmoid_exact_indices[2048-32-4]", True),
        ("sgl-kernel/test_moe_topk_sigmoid.py::test_topk_sigmoid_exact_indices[2048-32-2]", False),
        ("sgl-kernel/test_moe_topk_sigmoid.py::test_topk_sigmoid_exact_indices[12048-32-4]", False),
        ("test/registered/sampling/test_pytorch_sampling_backend.py::TestPyTorchSamplingBackend::test_greedy", True),
        ("test/registered/sampling/test_pytorch_sampling_backend.py::TestPyTorchSamplingBackend::test_greedy_batch", False),
    ],
)
def test_node_id_matching_treats_brackets_literally(nodeid, hit):
    assert (matching(load_config(env={}).known_issues, nodeid, "mi300") is not None) == hit


def test_seeded_entries():
    issues = load_config(env={}).known_issues
    assert {(i.mode, i.arches) for i in issues} == {("skip", ("mi300",)), ("xfail", ("mi300",))}
    assert all(isinstance(i.expires, dt.date) and i.link.startswith("https://") for i in issues)
    assert isinstance(issues[0], KnownIssue)


def test_touching_finds_the_files_a_known_issue_names():
    from ci.known_issues import touching

    issues = load_config(env={}).known_issues
    assert [i.mode for i in touching(issues, "sampling/test_pytorch_sampling_backend.py", "mi300")] == ["skip"]
    assert touching(issues, "sampling/test_pytorch_sampling_backend.py", "mi325") == []
    assert touching(issues, "sampling/test_other.py", "mi300") == []


def test_stage_summary_notes_known_issues_and_expiry():
    from ci.stage import known_issue_notes

    config = load_config(env={})
    notes = known_issue_notes(config, "mi300", ["sampling/test_pytorch_sampling_backend.py"], dt.date(2027, 4, 1))
    assert len(notes) == 1 and notes[0].startswith("**EXPIRED** known issue (skip on mi300)")
    assert known_issue_notes(config, "mi300", ["sampling/test_pytorch_sampling_backend.py"], dt.date(2026, 11, 26))[0].startswith("known issue")
