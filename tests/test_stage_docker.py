"""Stages through the real doors: the dry-run plan with partitions, and `nox -s demo`, the whole
path end to end (registries, LAN-first pull, container, runner, stop, reports)."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import base_env, run_door

TREE = {f"srt/test_{i:02}.py": f'register_amd_ci(est_time={(i % 7 + 1) * 60}, suite="stage-b-test-1-gpu-small-amd")\n'
        for i in range(30)}


def test_dry_run_shows_partitions_and_the_lower_bound(tmp_path):
    for name, text in TREE.items():
        (tmp_path / "test" / "registered" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "test" / "registered" / name).write_text(text)
    env = base_env(GITHUB_WORKSPACE=str(tmp_path))
    done = run_door("nox", "-s", "stage_b", "--", "--arch", "mi325", "--suite", "stage-b-test-1-gpu-small-amd",
                    "--partition", "2/4", "--dry-run", env=env)
    assert done.code == 0, done.err
    assert re.search(r"suite stage-b-test-1-gpu-small-amd: 30 file\(s\), 4 partition\(s\), makespan (\d+) s, lower bound (\d+) s", done.out)
    assert "partition 2/4:" in done.out and "<- this run" in done.out.split("partition 2/4:")[1].splitlines()[0]
    assert done.out.count("      srt/test_") == 30
    bad = run_door("nox", "-s", "stage_b", "--", "--arch", "mi325", "--partition", "5/4", "--dry-run", env=env)
    assert bad.code == 2 and "--partition '5/4': need 1 <= i <= N" in bad.err


def test_a_stage_that_finds_no_test_root_is_an_error(tmp_path):
    done = run_door("nox", "-s", "stage_a", "--", "--arch", "mi300", env=base_env(GITHUB_WORKSPACE=str(tmp_path)))
    assert done.code == 2 and "test root" in done.err and "not found" in done.err


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_demo_end_to_end(docker):
    before = {c.id for c in docker.containers.list(all=True)}
    done = run_door("nox", "-s", "demo", timeout=900)
    assert done.code == 0, done.out[-3000:] + done.err[-3000:]
    out = done.out
    assert re.search(r"image rocm/sgl-dev:\S+: source=lan \(127\.0\.0\.1:\d+\)", out)
    assert "started ci_sglang_demo" in out and "stopped and removed ci_sglang_demo" in out
    assert "stage-demo: PASSED: 4 passed, 1 flaky, 0 failed, 0 not run" in out
    assert "SKIPPED [1] test_sampling.py: known issue on mi300" in out  # a unittest file, run under the plugin
    assert "- known issue (skip on mi300): `*test_sampling.py::*test_greedy`" in out
    assert "| ⚠️ | `test_flaky.py` | flaky |" in out
    assert "- `test_disabled.py`: waits for a ROCm 7.2 fix" in out
    assert "| test_demo_throughput | output_throughput | 1234 tok/s | >= 1000 (mi300) (relaxed) | >= 1500 |" in out
    workspace = re.search(r"workspace kept for a look: (\S+)", out).group(1)
    from pathlib import Path

    reports = Path(workspace) / "ci-reports" / "stage-demo"
    record = json.loads((reports / "durations.json").read_text())  # the run record (ci.durations)
    assert (record["kind"], record["version"], record["run"]["arch"]) == ("run", 1, "mi300")
    assert record["run"]["digest"].startswith("sha256:")
    assert {u["name"]: u["outcome"] for u in record["units"]} == {
        "test_fast.py": "passed", "test_flaky.py": "flaky", "test_pytest_style.py": "passed", "test_slow.py": "passed",
        "test_sampling.py": "passed"}
    assert 'tests="6"' in (reports / "junit.xml").read_text()
    after = docker.containers.list(all=True)
    assert {c.id for c in after} <= before and not [c for c in after if c.name == "ci_sglang_demo"]  # nothing left
