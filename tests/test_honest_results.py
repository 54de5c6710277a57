"""Results that say what happened: a pytest file whose tests are all skipped or xfailed by known
issues is reported as such (not as "ran zero tests"), one skipped for another reason still fails;
a login the daemon refuses with 401 during a rate limit is retried before pulling anonymously."""

from __future__ import annotations

import io
import sys

import docker.errors
import pytest

from ci.config import load_config
from ci.pull import Puller
from ci.runner import PlannedFile, RunPlan, run_plan
from tests.conftest import KILL_GRACE_S, ROOT, file_runs

pytestmark = pytest.mark.timeout(120)

ALL_KNOWN = "import pytest\n\ndef test_greedy():\n    assert False\n\ndef test_greedy_again():\n    assert False\n"
OTHER_SKIP = "import pytest\n\n@pytest.mark.skip(reason='no GPU here')\ndef test_x():\n    pass\n"


@pytest.fixture
def known_issue_config(tmp_path, monkeypatch):
    override = tmp_path / "site.yaml"
    override.write_text("known_issues:\n"
                        "  - {test: 'test_known.py::test_greedy', arches: [mi300], mode: skip, reason: r, link: 'https://x/1'}\n"
                        "  - {test: 'test_known.py::test_greedy_again', arches: [mi300], mode: xfail, reason: r, link: 'https://x/2'}\n")
    monkeypatch.setenv("SGL_CI_CONFIG_OVERRIDE", str(override))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return override


def plan(tmp_path, files):
    root = tmp_path / "tests"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    return RunPlan("s", str(root), str(tmp_path / "reports"),
                   tuple(PlannedFile(name, 1, "pytest") for name in files), 60, 120, file_runs(), KILL_GRACE_S, python=sys.executable,
                   arch="mi300")


def test_a_file_entirely_skipped_by_known_issues_is_reported_as_such(tmp_path, known_issue_config):
    results = {r.path: r for r in run_plan(plan(tmp_path, {"test_known.py": ALL_KNOWN, "test_other.py": OTHER_SKIP}),
                                           io.StringIO())}
    known = results["test_known.py"]
    assert known.status == "passed", known
    assert known.reason == "all 2 test(s) skipped or xfailed by known issues"
    other = results["test_other.py"]  # skipped for a reason no known issue gives: ran nothing, so failed
    assert other.status == "failed" and other.reason == "exit code 0 but it ran zero tests"


class RateLimitedClient:
    """The daemon's answer to a login during a Docker Hub rate limit: 401, then it lets us in."""

    def __init__(self, refusals: int):
        self.refusals = refusals
        self.calls = 0

    def login(self, username, password, registry, reauth):
        self.calls += 1
        if self.calls <= self.refusals:
            raise docker.errors.APIError("login failed", explanation="Get https://registry-1.docker.io/v2/: 401 Unauthorized")
        return {"Status": "Login Succeeded"}


ENV = {"DOCKERHUB_AMD_USERNAME": "ci-bot", "DOCKERHUB_AMD_TOKEN": "dckr_pat_canary_0123456789"}


def test_a_401_during_a_rate_limit_is_retried_before_the_anonymous_fallback():
    config = load_config(env={})
    client, out, err, waits = RateLimitedClient(refusals=config.pull.login.attempts - 1), io.StringIO(), io.StringIO(), []
    assert Puller(config, client, ENV, out, err, sleep=waits.append).login_public() is True
    assert client.calls == config.pull.login.attempts and len(waits) == config.pull.login.attempts - 1
    assert "logged in to docker.io as ci-bot" in out.getvalue() and err.getvalue() == ""


def test_a_login_refused_every_time_falls_back_to_anonymous_after_the_attempts():
    config = load_config(env={})
    client, out, err = RateLimitedClient(refusals=99), io.StringIO(), io.StringIO()
    assert Puller(config, client, ENV, out, err, sleep=lambda s: None).login_public() is False
    assert client.calls == config.pull.login.attempts
    assert "pulling anonymously" in err.getvalue() and ENV["DOCKERHUB_AMD_TOKEN"] not in out.getvalue() + err.getvalue()
