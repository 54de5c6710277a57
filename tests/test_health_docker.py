"""Runner health through the real stage door (`nox -s stage_a`): a preflight that fails ends the
stage before any pull or container, as an infrastructure failure (exit 3, the JUnit property,
every file not run, the preflight table in the summary). Needs the Docker Engine (the stage
connects to it first), so it is marked `docker`."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import yaml

from tests.conftest import base_env, run_door, write_tree
from tests.support.health import NO_GPU_HEALTH

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

REGISTERED = ('from sglang.test.ci.ci_register import register_amd_ci\n'
              'register_amd_ci(est_time=10, suite="stage-a-test-1-gpu-small-amd")\n'
              'import unittest\nclass T(unittest.TestCase):\n    def test(self):\n        pass\n'
              'if __name__ == "__main__":\n    unittest.main()\n')


def test_a_failed_preflight_is_an_infrastructure_failure_and_runs_nothing(docker, tmp_path):
    workspace = write_tree(tmp_path / "ws", {"test/registered/test_one.py": REGISTERED})
    override = tmp_path / "override.yaml"
    health = {**NO_GPU_HEALTH, "disk": [{"path": "$WORKSPACE", "min_free_gib": 10**7}]}  # ten petabytes: fails
    override.write_text(yaml.safe_dump({"health": health}))
    output = tmp_path / "github_output"
    env = base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(workspace),
                   PUBLIC_DOCKER_REGISTRY="127.0.0.1:1", GITHUB_OUTPUT=str(output))
    done = run_door("nox", "-s", "stage_a", "--", "--arch", "mi300", "--suite", "stage-a-test-1-gpu-small-amd", env=env)
    assert done.code == 3, done.out[-3000:] + done.err[-3000:]
    assert "preflight disk: FAIL" in done.out and "INFRASTRUCTURE FAILURE: preflight failed: disk:" in done.out
    assert "failure_class=infrastructure" in output.read_text()
    report = next((workspace / "ci-reports").glob("stage-a*"))
    suite = ET.parse(report / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["sgl-ci.failure-class"] == "infrastructure" and suite.get("failures") == "0"
    assert suite.get("skipped") == suite.get("tests")  # nothing ran, nothing failed
    assert "### Preflight: **INFRASTRUCTURE FAILURE**" in (report / "summary.md").read_text()
