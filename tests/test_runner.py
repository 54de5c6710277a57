"""The stage runner with real processes: files that sleep, hang, fork children that ignore
SIGTERM, exit 0 after failing, run zero tests; retries that tell flaky from broken; fail-fast;
the stage deadline."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci import procs
from ci.runner import PlannedFile, RunPlan, read_results, run_plan
from tests.conftest import KILL_GRACE_S, file_runs

pytestmark = pytest.mark.timeout(120)

PASS = "import unittest\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\nunittest.main()\n"
FAIL_ACCURACY = ("import unittest\nclass T(unittest.TestCase):\n    def test_acc(self):\n"
                 "        self.assertGreater(0.61, 0.65, 'accuracy 0.61 below 0.65')\nunittest.main()\n")
CRASH = "raise RuntimeError('HIP error: invalid device function')\n"
HANG = "import time\ntime.sleep(600)\n"
ZERO_TESTS = "import unittest\nclass T(unittest.TestCase):\n    pass\nunittest.main()\n"
LIES = ("import os, sys, unittest\nclass T(unittest.TestCase):\n    def test_bad(self):\n        self.fail('wrong')\n"
        "result = unittest.main(exit=False).result\nsys.stdout.flush(); sys.stderr.flush()\nos._exit(0)  # an atexit hook that swallows the failure\n")
SILENT = "print('did something, ran no tests')\n"
FLAKY = ("import os, unittest\nclass T(unittest.TestCase):\n    def test_tput(self):\n"
         "        seen = os.path.exists('flaky.seen'); open('flaky.seen', 'w').close()\n"
         "        self.assertTrue(seen, 'throughput 812 tok/s below 900')\nunittest.main()\n")
# A parent that forks children which ignore SIGTERM, then hangs; children write their pids.
FORKER = ("import os, signal, sys, time\n"
          "for _ in range(3):\n"
          "    if os.fork() == 0:\n"
          "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "        open(f'child.{os.getpid()}', 'w').close()\n"
          "        time.sleep(600)\n"
          "        os._exit(0)\n"
          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "time.sleep(600)\n")



def make_plan(tmp_path: Path, files: dict[str, str], timeout_s: float = 30, stage_s: float = 300, retries: int = 0,
              continue_on_error: bool = True, styles: dict[str, str] | None = None) -> RunPlan:
    root = tmp_path / "tests"
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return RunPlan("stage-t", str(root), str(tmp_path / "reports"),
                   tuple(PlannedFile(name, 10, (styles or {}).get(name, "unittest")) for name in files),
                   timeout_s, stage_s, file_runs(), KILL_GRACE_S, retries, continue_on_error)


def by_path(results):
    return {r.path: r for r in results}


def test_statuses_and_the_exit_code_cross_check(tmp_path):
    results = by_path(run_plan(make_plan(tmp_path, {"pass.py": PASS, "crash.py": CRASH, "zero.py": ZERO_TESTS,
                                                    "lies.py": LIES, "silent.py": SILENT}), io.StringIO()))
    assert results["pass.py"].status == "passed" and results["pass.py"].attempts[0].tests == 1
    assert results["crash.py"].status == "failed" and "RuntimeError: HIP error" in results["crash.py"].reason
    assert results["zero.py"].status == "failed" and results["zero.py"].reason == "exit code 0 but it ran zero tests"
    assert results["lies.py"].attempts[0].exit_code == 0
    assert results["lies.py"].status == "failed" and "own report shows 1 failure(s)" in results["lies.py"].reason
    assert results["silent.py"].status == "failed" and "reported no test results" in results["silent.py"].reason


def test_pytest_files_are_judged_by_their_junit(tmp_path):
    (tmp_path / "tests" / "lying").mkdir(parents=True)
    # A conftest that turns the session's exit status into 0 whatever happened.
    (tmp_path / "tests" / "lying" / "conftest.py").write_text(
        "def pytest_sessionfinish(session, exitstatus):\n    session.exitstatus = 0\n")
    files = {"test_p.py": "def test_a():\n    assert True\n", "test_f.py": "def test_a():\n    assert 1 == 2\n",
             "test_none.py": "x = 1\n", "lying/test_l.py": "def test_a():\n    assert 1 == 2\n"}
    results = by_path(run_plan(make_plan(tmp_path, files, styles=dict.fromkeys(files, "pytest")), io.StringIO()))
    assert results["test_p.py"].status == "passed"
    assert results["test_f.py"].status == "failed"
    assert results["test_none.py"].status == "failed"  # pytest exits 5 for no tests; never a pass
    lying = results["lying/test_l.py"]
    assert lying.attempts[0].exit_code == 0 and lying.status == "failed"
    assert "own report shows 1 failure(s)" in lying.reason


def test_timeout_kills_the_whole_tree_within_two_seconds(tmp_path):
    plan = make_plan(tmp_path, {"forker.py": FORKER}, timeout_s=2)
    started = time.monotonic()
    (result,) = run_plan(plan, io.StringIO())
    took = time.monotonic() - started
    assert result.status == "timeout" and result.reason == "killed after 2 s"
    assert took < 2 + 2, took
    children = [int(p.name.split(".")[1]) for p in (tmp_path / "tests").glob("child.*")]
    assert len(children) == 3
    assert [p for p in children if procs.alive(p)] == [], "children that ignore SIGTERM outlived the timeout"


def test_retryable_failure_that_passes_is_flaky_and_crashes_are_not_retried(tmp_path):
    results = by_path(run_plan(make_plan(tmp_path, {"flaky.py": FLAKY, "crash.py": CRASH, "acc.py": FAIL_ACCURACY},
                                         retries=2), io.StringIO()))
    assert results["flaky.py"].status == "flaky" and len(results["flaky.py"].attempts) == 2
    assert "throughput 812 tok/s below 900" in results["flaky.py"].reason
    assert len(results["crash.py"].attempts) == 1  # RuntimeError: not retried
    assert results["acc.py"].status == "failed" and len(results["acc.py"].attempts) == 3  # accuracy: retried, still failing


def test_a_timed_out_file_is_retried(tmp_path):
    (result,) = run_plan(make_plan(tmp_path, {"hang.py": HANG}, timeout_s=1, retries=1), io.StringIO())
    assert result.status == "timeout" and len(result.attempts) == 2


def test_fail_fast_reports_the_rest_as_not_run(tmp_path):
    results = run_plan(make_plan(tmp_path, {"a.py": PASS, "b.py": CRASH, "c.py": PASS}, continue_on_error=False), io.StringIO())
    assert [r.status for r in results] == ["passed", "failed", "not-run"]
    assert results[2].reason == "not run: fail-fast after b.py"


def test_stage_deadline_kills_the_running_file_and_skips_the_rest(tmp_path):
    plan = make_plan(tmp_path, {"a.py": PASS, "hang.py": HANG, "c.py": PASS}, timeout_s=60, stage_s=3)
    started = time.monotonic()
    results = run_plan(plan, io.StringIO())
    assert time.monotonic() - started < 3 + 2
    assert [r.status for r in results] == ["passed", "timeout", "not-run"]
    assert results[1].reason.startswith("stage timeout reached after")
    assert results[2].reason == "stage timeout (0.05 min) reached"


def test_results_file_is_written_after_every_file(tmp_path):
    plan = make_plan(tmp_path, {"a.py": PASS, "b.py": PASS})
    run_plan(plan, io.StringIO())
    assert [r.status for r in read_results(Path(plan.report_dir))] == ["passed", "passed"]
    assert len(list((Path(plan.report_dir) / "logs").glob("*.log"))) == 2


def test_runner_module_entry_point(tmp_path):
    plan = make_plan(tmp_path, {"a.py": PASS, "b.py": CRASH})
    plan.dump(tmp_path / "plan.json")
    done = subprocess.run([sys.executable, "-m", "ci.runner", str(tmp_path / "plan.json")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 1
    assert "=== [1/2] a.py" in done.stdout and "--- b.py: FAILED" in done.stdout
    assert json.loads((tmp_path / "reports" / "results.json").read_text())["stage"] == "stage-t"


SAMPLING = ("import unittest\nclass TestSampling(unittest.TestCase):\n    def test_greedy(self):\n"
            "        self.fail('not bit-identical')\n    def test_other(self):\n        pass\n"
            "if __name__ == '__main__':\n    unittest.main()\n")


@pytest.mark.parametrize("arch, status", [("mi300", "passed"), ("mi325", "failed")])
def test_known_issues_apply_to_pytest_runs_for_their_arch_only(tmp_path, monkeypatch, arch, status):
    from tests.conftest import ROOT

    override = tmp_path / "o.yaml"
    override.write_text('known_issues:\n  - {test: "*t_sampling.py::*test_greedy", arches: [mi300], mode: skip, '
                        'reason: not bit-identical, link: "https://example.invalid/1"}\n')
    monkeypatch.setenv("SGL_CI_CONFIG_OVERRIDE", str(override))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    plan = make_plan(tmp_path, {"t_sampling.py": SAMPLING}, styles={"t_sampling.py": "pytest"})
    plan = RunPlan(**{**plan.__dict__, "arch": arch})
    out = io.StringIO()
    (result,) = run_plan(plan, out)
    assert result.status == status, out.getvalue()
    assert ("known issues applied on mi300" in out.getvalue()) == (arch == "mi300")
