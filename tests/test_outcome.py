"""Whose failure it is (ci.outcome): each class from real runs of the stage runner (ci.runner) on
this host — a file that aborts like a GPU hang (SIGABRT), a failing file, a flaky one, a passing
one — and from the reasons the stage gives (a failed preflight, a lost container, a stuck GPU,
an interrupt); the exit codes, the verdict line, the JUnit properties, and the collective smoke
test with a CPU (gloo) stand-in for the GPUs."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import pytest

from ci.config import load_config
from ci.errors import ExitCode
from ci.health import attempted
from ci.outcome import JUNIT_PROPERTY, FailureClass, class_of_exit_code, classify
from ci.report import counts, junit_xml
from ci.runner import FileResult, FileStatus, PlannedFile, RunPlan, run_plan
from ci.smoke import judge, run_smoke
from tests.conftest import KILL_GRACE_S, ROOT, file_runs

CONFIG = load_config(env={})
HANG = CONFIG.health.classify.gpu_hang_exit_codes

FILES = {
    "test_abort.py": "import os\nprint('HW Exception by GPU node-1 reason :GPU Hang', flush=True)\nos.abort()\n",
    "test_fail.py": "import unittest\nclass T(unittest.TestCase):\n    def test(self):\n        self.assertEqual(1, 2)\n"
                    "if __name__ == '__main__':\n    unittest.main()\n",
    "test_pass.py": "import unittest\nclass T(unittest.TestCase):\n    def test(self):\n        pass\n"
                    "if __name__ == '__main__':\n    unittest.main()\n",
    "test_flaky.py": "import os, unittest\nclass T(unittest.TestCase):\n    def test(self):\n"
                     "        marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), '.tried')\n"
                     "        if not os.path.exists(marker):\n            open(marker, 'w').close()\n"
                     "            self.fail('accuracy 0.71 below 0.8')\n"
                     "if __name__ == '__main__':\n    unittest.main()\n",
}


def run_files(tmp_path, names):
    root = tmp_path / "tests"
    root.mkdir()
    for name in names:
        (root / name).write_text(FILES[name])
    plan = RunPlan("stage", str(root), str(tmp_path / "reports"), tuple(PlannedFile(n, 1.0) for n in names), 60, 600, file_runs(), KILL_GRACE_S,
                   retries=1, continue_on_error=True, python=sys.executable)
    return run_plan(plan, out=open("/dev/null", "w"))


def test_a_file_that_aborts_like_a_gpu_hang_is_infrastructure(tmp_path):
    results = run_files(tmp_path, ["test_pass.py", "test_abort.py", "test_fail.py"])
    assert [a.exit_code for a in results[1].attempts] == [-6]  # SIGABRT; 134 when a shell reports it
    outcome = classify(attempted(results), HANG)
    assert outcome.failure_class is FailureClass.INFRASTRUCTURE and outcome.exit_code == ExitCode.INFRASTRUCTURE == 3
    assert outcome.reason == "test_abort.py aborted with exit code -6 (SIGABRT: how ROCm reports a GPU hang)"
    assert outcome.verdict(counts(results)).startswith("INFRASTRUCTURE FAILURE: test_abort.py aborted")


def test_a_failing_test_is_the_tests_failure(tmp_path):
    results = run_files(tmp_path, ["test_pass.py", "test_fail.py"])
    outcome = classify(attempted(results), HANG)
    assert (outcome.failure_class, outcome.exit_code) == (FailureClass.TEST, 1)
    assert outcome.verdict(counts(results)) == "FAILED (test failure): 1 passed, 0 flaky, 1 failed, 0 not run; test_fail.py failed"
    assert not outcome.failure_class.retry


def test_flaky_and_passed(tmp_path):
    results = run_files(tmp_path, ["test_pass.py", "test_flaky.py"])
    flaky = classify(attempted(results), HANG)
    assert (flaky.failure_class, flaky.exit_code) == (FailureClass.FLAKY, 0)
    assert classify(attempted(results[:1]), HANG).failure_class is FailureClass.PASSED


@pytest.mark.parametrize("reasons, expected", [
    ({"infrastructure": "preflight failed: gpus: 6 GPU(s)"}, FailureClass.INFRASTRUCTURE),
    ({"lost_container": "container ci_sglang was lost during the run (exited, exit code 137)"}, FailureClass.INFRASTRUCTURE),
    ({"stuck_gpu": "GPU 3 (94 % VRAM) stayed busy with no process holding it"}, FailureClass.INFRASTRUCTURE),
    ({"cancelled": "interrupted (SIGTERM)", "infrastructure": "pull failed"}, FailureClass.CANCELLED),
])
def test_reasons_from_the_stage(tmp_path, reasons, expected):
    files = [FileResult("slow.py", 60, FileStatus.TIMEOUT)]
    outcome = classify(attempted(files), HANG, **reasons)
    assert outcome.failure_class is expected
    assert outcome.exit_code == {FailureClass.INFRASTRUCTURE: 3, FailureClass.CANCELLED: 130}[expected]
    assert class_of_exit_code(outcome.exit_code) is expected


def test_a_timeout_alone_is_the_tests_failure():
    files = [FileResult("slow.py", 60, FileStatus.TIMEOUT)]
    assert classify(attempted(files), HANG).failure_class is FailureClass.TEST


def test_the_class_is_a_junit_property(tmp_path):
    results = run_files(tmp_path, ["test_pass.py"])
    suite = ET.fromstring(junit_xml("stage", results, [], {JUNIT_PROPERTY: "infrastructure"}))
    assert suite.find("properties/property").attrib == {"name": JUNIT_PROPERTY, "value": "infrastructure"}


class LocalExec:
    """The container's exec path, on this host: same arguments, same outcome shape."""

    def run_exec(self, argv, env, workdir, sink=None, timeout_s=None):
        import subprocess

        from ci.container import ExecOutcome
        argv = [sys.executable if a == "python3" else a for a in argv]
        process = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            out, _ = process.communicate(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            import os
            os.killpg(process.pid, 9)
            out, _ = process.communicate()
            timed_out = True
        sink.write(out)
        return ExecOutcome(process.returncode, timed_out)


def test_smoke_test_all_reduce_on_the_cpu_stand_in(tmp_path):
    """gloo on the CPU stands in for nccl/RCCL on the GPUs (no GPU here): the plumbing is the
    stage's (argv from config, the exec path, the timeout, each rank's line)."""
    pytest.importorskip("torch", reason="torch (CPU build) is a test extra")
    spec = CONFIG.health.smoke.__class__(**{**CONFIG.health.smoke.__dict__, "workdir": str(tmp_path), "timeout_s": 120})
    result = run_smoke(LocalExec(), spec, 2, str(ROOT), {}, backend="gloo")  # the toolkit here is this checkout
    assert result.ok, result.reason
    assert [r["rank"] for r in result.ranks] == [0, 1] and all(r["sum"] == 3.0 for r in result.ranks)
    assert result.reason.startswith("all-reduce across 2 rank(s) (gloo) gave the exact sum")


def test_smoke_test_failures_say_why():
    hung = judge(8, 137, True, "SGL_CI_SMOKE {\"rank\": 0, \"ok\": true}\n", 300.0, ("torchrun",), 300)
    assert not hung.ok and "no result within 300 s (1/8 rank(s) reported): a collective that hangs" in hung.reason
    crashed = judge(2, 1, False, "RuntimeError: NCCL error: unhandled system error\n", 3.0, ("torchrun",), 300)
    assert crashed.reason == ("collective smoke test failed: exited with 1 (0/2 rank(s) reported): "
                              "RuntimeError: NCCL error: unhandled system error")
    wrong = judge(2, 0, False, "SGL_CI_SMOKE {\"rank\": 0, \"ok\": false}\nSGL_CI_SMOKE {\"rank\": 1, \"ok\": true}\n",
                  1.0, ("torchrun",), 300)
    assert not wrong.ok and "1/2 rank(s) reported the right sum" in wrong.reason
