"""Reports: the verdict and exit code come from the results; JUnit, durations and the summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ci.report import durations, junit_xml, summary_markdown, verdict
from ci.runner import Attempt, FileResult
from ci.suites import RegisteredFile
from ci.thresholds import Bound, Checked


def result(path, status, *verdicts, reason=""):
    return FileResult(path, 10.0, status, [Attempt(0 if v == "passed" else 1, 12.0, v, reason) for v in verdicts], reason)


def test_verdicts():
    assert verdict([]) == (1, "FAILED: no test file ran")
    assert verdict([result("a", "not-run")])[0] == 1
    assert verdict([result("a", "passed", "passed")]) == (0, "PASSED: 1 passed, 0 flaky, 0 failed, 0 not run")
    code, line = verdict([result("a", "passed", "passed"), result("b", "flaky", "failed", "passed")])
    assert code == 0 and "1 flaky" in line and "look at them" in line
    assert verdict([result("a", "passed", "passed"), result("b", "timeout", "timeout")])[0] == 1
    assert verdict([result("a", "passed", "passed"), result("b", "not-run")])[0] == 1  # a file left unrun is no pass


def test_junit_counts_and_disabled_files():
    xml = junit_xml("stage-x", [result("a.py", "passed", "passed"), result("b.py", "failed", "failed", reason="exit code 1"),
                                result("c.py", "not-run", reason="fail-fast")],
                    [RegisteredFile("d.py", "s", 5, disabled="waits for a fix")])
    suite = ET.fromstring(xml)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "2")
    assert suite.find("testcase[@name='b.py']/failure").get("message") == "exit code 1"
    assert suite.find("testcase[@name='d.py']/skipped").get("message") == "disabled: waits for a fix"


def test_durations_keep_finished_runs_only():
    previous = {"old.py": 5.0, "b.py": 99.0}
    merged = durations([result("a.py", "passed", "passed"), result("b.py", "timeout", "timeout")], previous)
    assert merged == {"a.py": 12.0, "b.py": 99.0, "old.py": 5.0}


def test_summary_has_status_time_vs_estimate_retries_and_headroom():
    check = Checked(Bound("test_x", "tput", "min", 900, 2000, "tok/s", "mi300", {}), 1000, True, 11.1)
    text = summary_markdown("stage-c on mi300", [result("a.py", "flaky", "failed", "passed", reason="passed on retry after: x")],
                            [], [check])
    assert "**PASSED: 0 passed, 1 flaky" in text
    assert "| ⚠️ | `a.py` | flaky | 24.0 s (240%) | 10 s | 2 | passed on retry after: x |" in text
    assert "| test_x | tput | 1000 tok/s | >= 900 (mi300) (relaxed) | >= 2000 | +11.1 % |" in text
