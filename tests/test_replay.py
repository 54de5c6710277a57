"""Replaying a CI job from its report, with no Docker: the record a stage writes (units in order,
shards, commands, timeouts, known issues, bounds, env without secrets), its strict loader (paths,
folders, loopback URLs), what --failed and --only pick, the plan a record maps back to (the very
files the runner got), this box against CI's (reported or refused), the settings applied as a
config override, the JUnit properties and the summary's last line, and the nox door."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ci import replay, reproduce
from ci.arch import ArchResolution, DeviceReport
from ci.config import OVERRIDE_ENV, ReplayConfig, load_config
from ci.errors import UserError
from ci.images import ImageName
from ci.plan import build_plan, load_tree
from ci.pull import PullOutcome
from ci.replay import Commit, RecordError
from ci.report import write_reports
from ci.reproduce import Box, Verdict
from ci.runner import FileResult, FileStatus, RunPlan
from ci.stage import file_runs, partition_label, planned_files
from tests.conftest import (
    FIXTURES,
    ROOT,
    base_env,
    make_small_config_dir,
    run_door,
    write_tree,
)

FIXED, AUTO, CMD = "fx-a-test-fixed-amd", "fx-a-test-auto-amd", "fx-a-test-cmd-amd"
TODAY = dt.date(2026, 8, 22)
NOW = dt.datetime(2026, 8, 22, 12, 0, tzinfo=dt.timezone.utc)
DIGEST = "sha256:" + "ab" * 32
IMAGE = "rocm/sgl-dev:v0.5.10-rocm700-mi30x-20260822"
CANARY = "canary-5e1f-not-a-real-token"
MAIN = '\nif __name__ == "__main__":\n    unittest.main()\n'
SPLIT = '''import unittest
register_amd_ci(est_time=40, suite="fx-a-test-fixed-amd")
class TestAlpha(unittest.TestCase):
    def test_one(self): pass
    def test_two(self): pass
class TestBeta(unittest.TestCase):
    def test_one(self): pass
class TestGamma(unittest.TestCase):
    def test_one(self): pass
''' + MAIN
OVERRIDE = {
    "durations": {"splitting": {"split_above_s": 10, "min_shard_s": 1, "max_shards": 2}},
    "known_issues": [{"test": "*fx-a-test-fixed-amd/t1.py::*test_greedy", "arches": ["mi300"], "mode": "skip",
                      "reason": "not bit-identical on MI300X", "link": "https://example.invalid/1",
                      "expires": dt.date(2027, 3, 31)},
                     {"test": "*t9.py::*", "arches": ["mi355"], "mode": "xfail", "reason": "other arch",
                      "link": "https://example.invalid/2"}],
    "container": {"env": {"HF_HOME": "/sgl-data/hf", "LEAKY": CANARY}},
}


@pytest.fixture
def world(tmp_path):
    """A workspace with a tree for every fx-a job on mi300 (a long file split into two shards), the
    small config with an override, and a plan of the whole stage on it."""
    workspace = tmp_path / "workspace"
    files = {f"{FIXED}/t{i}.py": f'register_amd_ci(est_time={est}, suite="{FIXED}"){MAIN}'
             for i, est in enumerate([300, 300, 200, 100])}
    files[f"{FIXED}/long.py"] = SPLIT
    files[f"{AUTO}/t0.py"] = f'register_amd_ci(est_time=100, suite="{AUTO}"){MAIN}'
    write_tree(workspace / "test" / "registered", files)
    config_dir = make_small_config_dir(tmp_path / "config")
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump(OVERRIDE))
    env = {"SGL_CI_CONFIG_DIR": str(config_dir), OVERRIDE_ENV: str(override), "HF_TOKEN": CANARY,
           "DOCKERHUB_AMD_USERNAME": "bot", "DOCKERHUB_AMD_TOKEN": CANARY, "GITHUB_WORKSPACE": str(workspace)}
    config = load_config(env=env)
    return workspace, config, env


def stage_plan(world, **kwargs):
    workspace, config, _ = world
    return build_plan(config, "fx-a", ArchResolution(config.arch("mi300"), "--arch"), TODAY,
                      load_tree(config, workspace / "test" / "registered"), **kwargs)


def runner_plan(world, plan, retries=2, continue_on_error=True) -> RunPlan:
    """The RunPlan run_stage writes as plan.json for this plan."""
    workspace, config, _ = world
    return RunPlan(stage=partition_label(plan), test_root="/sglang-checkout/test/registered",
                   report_dir="/sglang-checkout/ci-reports/x", files=planned_files(config, plan, workspace),
                   per_file_timeout_s=max(j.per_file_timeout_s for j in plan.jobs),
                   stage_timeout_s=plan.timeout_minutes * 60, runs=file_runs(config), retries=retries, continue_on_error=continue_on_error,
                   python="python3", arch="mi300", kill_grace_s=plan.stage.kill_grace_s)


STATUSES = ["passed", "failed", "timeout", "flaky", "not-run"]


def results_for(run_plan: RunPlan) -> list[FileResult]:
    return [FileResult(f.path, f.est_time, STATUSES[i % len(STATUSES)]) for i, f in enumerate(run_plan.files)]


def outcome(digest: str | None = DIGEST) -> PullOutcome:
    name, tag = IMAGE.split(":")
    return PullOutcome(ImageName(name, tag), "lan", "127.0.0.1:5000", digest, 1, 0.1, 1)


def record_of(world, plan=None, toolkit: Path = ROOT, env_extra=None, **kwargs):
    workspace, config, env = world
    plan = plan or stage_plan(world)
    run_plan = runner_plan(world, plan, **kwargs)
    report_dir = workspace / "ci-reports" / run_plan.stage
    record = replay.build_record(config, plan, run_plan, results_for(run_plan), outcome(), workspace, report_dir,
                                 {**env, **(env_extra or {})}, NOW, toolkit)
    return record, run_plan


def write_report(world, record, run_plan) -> Path:
    """What run_stage writes: replay.json, and the record as JUnit properties."""
    report_dir = world[0] / "ci-reports" / run_plan.stage
    write_reports(report_dir, run_plan.stage, results_for(run_plan), [], {}, dict(replay.junit_properties(record)))
    (report_dir / replay.FILE).write_text(replay.record_json(record))
    return report_dir


def box(**kwargs) -> Box:
    values = {"arch": "mi300", "product": "MI300X", "gfx": "gfx942", "arch_how": "from rocminfo", "gpus": 8,
              "gpus_how": "from rocm-smi", "toolkit": Commit("1" * 40, "0.1.0"), "tree": Commit("2" * 40)}
    return Box(**{**values, **kwargs})


# --- the record ------------------------------------------------------------------------------------
def test_the_record_holds_every_unit_in_run_order_with_its_settings(world):
    plan = stage_plan(world)
    record, run_plan = record_of(world, plan)
    assert [u.name for u in record.units] == [f.path for f in run_plan.files]  # the runner's order
    assert [(u.style, u.timeout_s, u.selectors, u.argv) for u in record.units] == [
        (f.style, f.timeout_s, f.selectors, f.argv) for f in run_plan.files]
    by_name = {u.name: u for u in record.units}
    assert by_name[f"{FIXED}/t1.py"].style == "pytest"  # a known issue touches it: it ran under pytest
    shards = [u for u in record.units if u.selectors]
    assert [u.name for u in shards] == [f"{FIXED}/long.py::TestAlpha", f"{FIXED}/long.py::TestBeta+TestGamma"]
    assert all(u.file == f"{FIXED}/long.py" and 0 < u.timeout_s <= 600 for u in shards)
    every = [u for u in record.units if u.name == "every"]
    assert [u.argv[-3:] for u in every] == [("0", "--of", "2"), ("1", "--of", "2")]  # filled in per partition
    assert [u.partition for u in every] == [1, 2] and all(u.cwd == "python" for u in every)
    assert [u.status.value for u in record.units] == [STATUSES[i % 5] for i in range(len(record.units))]
    assert (record.arch, record.product, record.gfx, record.image, record.digest) == ("mi300", "MI300X", "gfx942", IMAGE, DIGEST)
    assert (record.retries, record.continue_on_error, record.stage_timeout_s) == (2, True, run_plan.stage_timeout_s)
    assert [(j.suite, j.partitions, j.partition, j.per_file_timeout_s, j.timeout_minutes, j.gpus) for j in record.jobs] == [
        (FIXED, 2, None, 600, 20, 1), (AUTO, 1, None, 600, 10, 2), (CMD, 2, None, 600, 10, 1)]
    assert [i.test for i in record.known_issues] == [OVERRIDE["known_issues"][0]["test"]]  # mi300's only
    bounds = {(t.test, t.metric): t for t in record.thresholds}
    assert (bounds[("test_vlm_offline_throughput", "output_throughput")].in_force, bounds[("test_torch_compile_moe", "throughput")].source) == (900, "amd")
    assert record.toolkit.commit == replay.git_commit(ROOT, 10) and record.tree.commit == replay.UNKNOWN
    assert record.test_root == "test/registered" and record.session == "fx_a" and record.label == "fx-a"
    assert record.command == f"nox -s fx_a -- --replay {(world[0] / 'ci-reports' / 'fx-a').resolve()}"


def test_one_partition_records_only_its_units_and_its_number(world):
    plan = stage_plan(world, suite=FIXED, partition_arg=(2, 2))
    record, run_plan = record_of(world, plan)
    assert [u.name for u in record.units] == [f.path for f in run_plan.files] and {u.partition for u in record.units} == {2}
    assert [(j.suite, j.partition, j.partitions) for j in record.jobs] == [(FIXED, 2, 2)]
    assert record.label == f"fx-a-{FIXED}-2of2"


def test_the_record_round_trips_through_its_json(world):
    record, _ = record_of(world)
    assert replay.parse_record(replay.record_json(record), "x") == record


def test_no_secret_reaches_the_record_the_junit_or_the_summary(world):
    record, run_plan = record_of(world)
    report_dir = write_report(world, record, run_plan)
    assert record.env["HF_HOME"] == "/sgl-data/hf" and record.env["SGL_CI_ARCH"] == "mi300"
    assert record.env["SGLANG_IS_IN_CI_AMD"] == "1" and record.env["PYTHONPATH"] == "/sgl-ci"
    for text in ((report_dir / "replay.json").read_text(), (report_dir / "junit.xml").read_text(),
                 replay.summary_markdown(record)):
        assert CANARY not in text
        assert "HF_TOKEN" not in text and "DOCKERHUB_AMD" not in text
    assert "LEAKY" not in record.env  # config put a secret's value into the env: left out by value


def test_the_junit_carries_the_same_data_as_properties(world):
    record, run_plan = record_of(world)
    report_dir = write_report(world, record, run_plan)
    suite = ET.parse(report_dir / "junit.xml").getroot()
    assert suite[0].tag == "properties" and suite.find("testcase") is not None  # properties first, cases kept
    rebuilt: dict = {}
    for prop in suite[0]:
        keys = prop.get("name").split(".")[2:]  # sgl-ci.replay.<path>
        target = rebuilt
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = prop.get("value")
    data = replay.record_data(record)
    assert [json.loads(v) for _, v in sorted(rebuilt["units"].items(), key=lambda kv: int(kv[0]))] == data["units"]
    assert [json.loads(v) for v in rebuilt["jobs"].values()] == data["jobs"]
    assert [json.loads(v) for v in rebuilt["known_issues"].values()] == data["known_issues"]
    assert [json.loads(v) for v in rebuilt["thresholds"].values()] == data["thresholds"]
    assert rebuilt["env"] == data["env"] and rebuilt["image"]["digest"] == DIGEST and rebuilt["command"] == record.command
    assert json.loads(rebuilt["settings"]["retries"]) == 2 and rebuilt["toolkit"]["commit"] == record.toolkit.commit


def test_the_summary_ends_with_the_command_and_in_actions_names_the_folder_in_the_workspace(world):
    workspace, config, _ = world
    record, _ = record_of(world, env_extra={"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "77", "GITHUB_REPOSITORY": "o/r"})
    assert record.command == "nox -s fx_a -- --replay ci-reports/fx-a"
    assert record.run_url == "https://github.com/o/r/actions/runs/77"
    assert replay.summary_markdown(record).rstrip("\n").splitlines()[-1].endswith("`nox -s fx_a -- --replay ci-reports/fx-a`")
    url = ReplayConfig(10, 30, 1 << 20, "https://reports.lan/{repository}/{run_id}/{attempt}/{label}/")
    line = replay.command_line(type("C", (), {"replay": url})(), "fx_a", workspace / "r", workspace, "fx-a-x-2of4",
                               {"GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "2"})
    assert line == "nox -s fx_a -- --replay https://reports.lan/o/r/77/2/fx-a-x-2of4/"
    spaced = replay.command_line(config, "fx_a", Path("/tmp/a b"), workspace, "fx-a", {})
    assert spaced == "nox -s fx_a -- --replay '/tmp/a b'"  # copy-pasteable


def test_commits_come_from_git_or_are_unknown(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "f").write_text("x")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert replay.git_commit(repo, 10) == replay.UNKNOWN  # no commit yet
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert replay.git_commit(repo, 10) == head
    assert replay.git_commit(repo / "sub", 10) == replay.UNKNOWN  # inside another checkout: not its own
    assert replay.git_commit(tmp_path / "plain", 10) == replay.UNKNOWN
    assert replay.toolkit_commit(tmp_path, 10) == Commit(replay.UNKNOWN, replay.toolkit_commit(ROOT, 10).version)
    assert Commit(replay.UNKNOWN, "0.1.0").shown == "unknown (version 0.1.0)"


# --- the loader ---------------------------------------------------------------------------------------
def test_a_report_loads_from_its_folder_its_file_or_a_relative_path(world):
    record, run_plan = record_of(world)
    report_dir = write_report(world, record, run_plan)
    workspace, config, _ = world
    for given in (str(report_dir), str(report_dir / "replay.json"), "ci-reports/fx-a"):
        loaded, source = replay.load(given, workspace, config.replay)
        assert loaded == record and source == str(report_dir / "replay.json")


@pytest.mark.parametrize("text, message", [
    ("{", "not JSON"),
    ('{"format": "sgl-ci-durations", "kind": "run", "version": 1}', "not a replay record (format 'sgl-ci-durations'"),
    ("[1, 2]", "not a replay record (format None"),
    ('{"format": "sgl-ci-replay", "version": 2}', "replay record version 2; this toolkit reads version 1"),
])
def test_a_foreign_or_newer_file_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "replay.json").write_text(text)
    with pytest.raises(RecordError) as caught:
        replay.load(str(tmp_path), tmp_path, ReplayConfig(10, 30, 1 << 20))
    assert message in str(caught.value) and str(tmp_path / "replay.json") in str(caught.value)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2


@pytest.mark.parametrize("path, value, message", [
    (("units", 0, "timeout_s"), 0, "units[0].timeout_s: expected a number > 0, got 0"),
    (("units", 0, "status"), "green", "units[0].status: 'green' (allowed: passed, flaky, failed, timeout, not-run)"),
    (("units", 0, "suite"), "nope", "units[0].suite: 'nope' is none of the record's jobs"),
    (("units", 1, "name"), None, "units[1].name: expected a non-empty string, got None"),
    (("image", "digest"), "sha256:xyz", "image.digest: expected sha256: and 64 hex digits"),
    (("image", "name"), "rocm/sgl-dev", "image.name: 'rocm/sgl-dev' has no tag"),
    (("jobs", 0, "partition"), 3, "jobs[0].partition: 3 of 2 partition(s)"),
    (("settings", "retries"), -1, "settings.retries: expected a whole number >= 0, got -1"),
    (("toolkit", "commit"), "main", "toolkit.commit: expected a commit (hex) or 'unknown'"),
    (("known_issues", 0, "expires"), "soon", "known_issues[0].expires: expected a date"),
    (("thresholds", 0, "in_force"), "fast", "thresholds[0].in_force: expected a list, got a string"),
    (("env",), {"A": 1}, "env: expected an object of strings"),
])
def test_every_malformed_field_is_named(world, tmp_path, path, value, message):
    record, _ = record_of(world)
    data = replay.record_data(record)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (tmp_path / "replay.json").write_text(json.dumps(data))
    with pytest.raises(RecordError) as caught:
        replay.load(str(tmp_path / "replay.json"), tmp_path, ReplayConfig(10, 30, 1 << 20))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_missing_and_oversized_and_odd_inputs_are_one_line_each(tmp_path):
    limits = ReplayConfig(10, 30, 100)
    with pytest.raises(RecordError, match="no replay.json in the folder"):
        replay.load(str(tmp_path), tmp_path, limits)
    with pytest.raises(RecordError, match="no such file or folder"):
        replay.load("nowhere", tmp_path, limits)
    (tmp_path / "big.json").write_text(" " * 101)
    with pytest.raises(RecordError, match="over the 100 a replay record may have"):
        replay.load("big.json", tmp_path, limits)
    with pytest.raises(RecordError, match="not a path or an http"):
        replay.load("ftp://host/replay.json", tmp_path, limits)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_report_loads_from_a_loopback_url_and_bad_urls_are_clear(world, tmp_path):
    record, run_plan = record_of(world)
    report_dir = write_report(world, record, run_plan)
    served = tmp_path / "served"
    shutil.copytree(report_dir, served / "reports" / "fx-a")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    limits = ReplayConfig(10, 5, 1 << 20)
    try:
        for url in (f"{base}/reports/fx-a", f"{base}/reports/fx-a/", f"{base}/reports/fx-a/replay.json"):
            loaded, source = replay.load(url, tmp_path, limits)
            assert loaded == record and source == f"{base}/reports/fx-a/replay.json"
        with pytest.raises(RecordError, match=r"HTTP 404 .* \(allowed: a URL that serves a report's replay.json"):
            replay.load(f"{base}/reports/other", tmp_path, limits)
    finally:
        server.shutdown()
    with socket.socket() as silent:  # accepts, never answers: the configured timeout ends it
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(RecordError, match=r"no answer within 0.5 s \(replay.fetch_timeout_s\)"):
            replay.load(f"http://127.0.0.1:{port}/r/", tmp_path, ReplayConfig(10, 0.5, 1 << 20))
    with pytest.raises(RecordError, match=r"cannot connect \(connection refused\)"):
        replay.load(f"http://127.0.0.1:{port}/r/", tmp_path, limits)


# --- which units ---------------------------------------------------------------------------------------
def test_failed_picks_exactly_the_failed_timed_out_and_flaky_units_in_order(world):
    record, _ = record_of(world)
    picked = reproduce.select(record, failed=True)
    assert [u.name for u in picked] == [u.name for u in record.units if u.status.value in ("failed", "timeout", "flaky")]
    assert {u.status for u in picked} == {FileStatus.FAILED, FileStatus.TIMEOUT, FileStatus.FLAKY}
    everything = reproduce.select(record)
    assert everything == record.units


def test_failed_with_nothing_failed_is_an_error_that_says_what_there_was(world):
    record, _ = record_of(world)
    passed = type(record)(**{**record.__dict__, "units": tuple(u for u in record.units if u.status is FileStatus.PASSED)})
    with pytest.raises(UserError, match=r"--failed: no unit of fx-a failed, timed out or was flaky \(\d+ passed\); "
                                        r"replay without --failed"):
        reproduce.select(passed, failed=True)


def test_only_names_units_or_files_and_keeps_the_recorded_order(world):
    record, _ = record_of(world)
    picked = reproduce.select(record, only=[f"test/registered/{FIXED}/t2.py", f"./{FIXED}/long.py", "free"])
    names = [u.name for u in record.units]
    expected = [n for n in names if n in (f"{FIXED}/t2.py", "free") or n.startswith(f"{FIXED}/long.py::")]
    assert [u.name for u in picked] == expected and len(expected) == 4  # a file names both its shards
    with pytest.raises(UserError, match=rf"--only {FIXED}/t7.py: not a unit of the report \(allowed: {FIXED}/"):
        reproduce.select(record, only=[f"{FIXED}/t7.py"])
    with pytest.raises(UserError, match="--only and --failed together: give one"):
        reproduce.select(record, only=["free"], failed=True)


# --- the plan a record maps back to ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"suite": FIXED, "partition_arg": (1, 2)}, {"suite": CMD, "partition_arg": (2, 2)}])
def test_a_record_replays_to_the_same_files_order_and_settings(world, kwargs):
    workspace, config, _ = world
    plan = stage_plan(world, **kwargs)
    record, run_plan = record_of(world, plan)
    again = reproduce.replay_plan(config, record, record.units, workspace, "x")
    assert planned_files(config, again, workspace) == run_plan.files  # every field the runner reads
    assert partition_label(again) == run_plan.stage
    assert again.timeout_minutes * 60 == run_plan.stage_timeout_s and again.stage.kill_grace_s == run_plan.kill_grace_s
    assert max(j.per_file_timeout_s for j in again.jobs) == run_plan.per_file_timeout_s
    assert [str(i) for i in again.images] == [IMAGE] and again.image_overridden


def test_a_subset_keeps_the_recorded_timeouts_and_partitions(world):
    workspace, config, _ = world
    record, run_plan = record_of(world)
    picked = reproduce.select(record, failed=True)
    again = reproduce.replay_plan(config, record, picked, workspace, "x")
    assert planned_files(config, again, workspace) == tuple(f for u, f in zip(record.units, run_plan.files) if u in picked)
    assert len(picked) < len(record.units)
    assert again.timeout_minutes * 60 == run_plan.stage_timeout_s  # the same stage timeout as CI's


def test_recorded_timeouts_win_over_this_config(world, tmp_path):
    workspace, _config, env = world
    record, run_plan = record_of(world)
    changed = dict(OVERRIDE, stages={"fx-a": {"retries": 0, "kill_grace_s": 9}})
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    other = load_config(env={**env, OVERRIDE_ENV: str(tmp_path / "changed.yaml")})
    again = reproduce.replay_plan(other, record, record.units, workspace, "x")
    assert planned_files(other, again, workspace) == run_plan.files and again.stage.kill_grace_s == run_plan.kill_grace_s


def test_a_suite_this_config_lacks_is_a_clear_error(world):
    workspace, config, _ = world
    record, _ = record_of(world)
    job = record.jobs[0]
    foreign = type(record)(**{**record.__dict__, "jobs": (type(job)(**{**job.__dict__, "suite": "gone-amd"}),),
                              "units": tuple(type(u)(**{**u.__dict__, "suite": "gone-amd"}) for u in record.units[:1])})
    with pytest.raises(UserError, match="the report's suite gone-amd is not a job of fx-a in this toolkit's config"):
        reproduce.replay_plan(config, foreign, foreign.units, workspace, "x")


# --- the same settings: known issues, bounds, env ----------------------------------------------------
def test_recorded_known_issues_bounds_and_env_apply_over_a_changed_config(world, tmp_path):
    _workspace, _config, env = world
    record, _ = record_of(world)
    drifted = {"known_issues": [], "thresholds": {"test_vlm_offline_throughput": {"output_throughput": {
        "kind": "min", "unit": "tok/s", "default": 2500, "amd": 1200, "arch": {"mi300": 1100, "mi325": 1300}}},
        "test_torch_compile_moe": {"throughput": {"kind": "min", "unit": "tok/s", "default": 270, "amd": 200,
                                                  "arch": {"mi300": 100}}}},
        "container": {"exec": {"env": {"SGLANG_USE_AITER": "0", "EXTRA": "1"}}},
        "arches": {"arches": {"mi300": {"env": {"SGLANG_USE_AITER": "0"}}}}}
    (tmp_path / "drifted.yaml").write_text(yaml.safe_dump(drifted))
    drifted_env = {**env, OVERRIDE_ENV: str(tmp_path / "drifted.yaml")}
    here = load_config(env=drifted_env)
    (tmp_path / "replay.yaml").write_text(yaml.safe_dump(reproduce.settings_override(record, here, drifted)))
    applied = load_config(env={**env, OVERRIDE_ENV: str(tmp_path / "replay.yaml")})
    assert applied.known_issues == record.known_issues
    in_force = {(t.test, t.metric): (t.in_force, t.default) for t in replay.thresholds_in_force(applied, "mi300")}
    assert {(t.test, t.metric): (t.in_force, t.default) for t in record.thresholds}.items() <= in_force.items()
    assert reproduce.env_differences(record, applied, env) == ["EXTRA='1' (not set in CI)"]
    assert reproduce.env_differences(record, here, env)[:1] == ["EXTRA='1' (not set in CI)"]


# --- this box against CI's ------------------------------------------------------------------------------
def test_the_same_box_is_said_to_be_the_same(world):
    record, _ = record_of(world, toolkit=ROOT)
    verdicts = {c.what: c.verdict for c in reproduce.compare(record, box(gpus=2, toolkit=record.toolkit, tree=record.tree))}
    assert verdicts == {"arch": Verdict.SAME, "GPUs": Verdict.SAME, "toolkit": Verdict.SAME, "test tree": Verdict.UNKNOWN}


def test_another_arch_is_reported_another_gfx_or_too_few_gpus_refused(world):
    record, _ = record_of(world)
    found = {c.what: c for c in reproduce.compare(record, box(arch="mi325", product="MI325X"))}
    assert found["arch"].verdict is Verdict.DIFFERS and "this box is mi325 (MI325X, gfx942)" in found["arch"].detail
    assert "the recorded bounds and timings are MI300X's" in found["arch"].detail
    found = {c.what: c for c in reproduce.compare(record, box(arch=None, product="MI350X", gfx="gfx950"))}
    assert found["arch"].verdict is Verdict.REFUSED and "kernels are built for gfx942" in found["arch"].detail
    found = {c.what: c for c in reproduce.compare(record, box(gpus=1))}
    assert found["GPUs"].verdict is Verdict.REFUSED and found["GPUs"].detail == "this box has 1 (from rocm-smi), the job had 2 GPU(s)"
    found = {c.what: c for c in reproduce.compare(record, box(gpus=None, gpus_how="no rocm-smi or nvidia-smi answered"))}
    assert found["GPUs"].verdict is Verdict.UNKNOWN and "cannot check that this box has the 2 GPU(s)" in found["GPUs"].detail
    found = {c.what: c for c in reproduce.compare(record, box(toolkit=Commit("3" * 40)))}
    assert found["toolkit"].verdict is Verdict.DIFFERS and f"CI ran {record.toolkit.commit[:12]}, this toolkit is 333333333333" in found["toolkit"].detail


def test_the_box_is_read_from_the_device_tools(world):
    workspace, config, _env = world
    rocminfo = (FIXTURES / "devices" / "rocminfo_mi300x.txt").read_text()
    vram = (FIXTURES / "devices" / "rocm-smi_showmeminfo_vram_mi300x.txt").read_text()
    from ci.arch import parse_device_output
    from ci.gpu import parse_rocm_smi_vram

    seen = reproduce.look_at_box(config, {}, workspace, probe=lambda c: parse_device_output("rocminfo", rocminfo),
                                 vram=lambda t: ("rocm-smi", parse_rocm_smi_vram(vram)))
    assert (seen.arch, seen.product, seen.gfx, seen.gpus) == ("mi300", "MI300X", "gfx942", 7)
    nothing = reproduce.look_at_box(config, {}, workspace, probe=lambda c: None, vram=lambda t: None)
    assert (nothing.arch, nothing.gpus) == (None, None) and "no amd-smi, rocm-smi or rocminfo answered" in nothing.arch_how
    named = reproduce.look_at_box(config, {"RUNNER_ARCH": "mi325"}, workspace, probe=lambda c: None, vram=lambda t: None)
    assert (named.arch, named.product) == ("mi325", "MI325X")
    unknown = reproduce.look_at_box(config, {}, workspace, probe=lambda c: DeviceReport("amd-smi", ("MI350X",), ("gfx950",)),
                                    vram=lambda t: None)
    assert (unknown.arch, unknown.product, unknown.gfx) == (None, "MI350X", "gfx950")


def test_a_refused_replay_stops_before_anything_runs_unless_forced(world, capsys):
    workspace, _config, env = world
    record, run_plan = record_of(world)
    report_dir = write_report(world, record, run_plan)
    one_gpu = {"probe": lambda c: None, "vram": lambda t: ("rocm-smi", [object()])}
    with pytest.raises(UserError) as caught:
        reproduce.replay_report(str(report_dir), env=env, workspace=workspace, today=TODAY, dry_run=True, **one_gpu)
    assert str(caught.value) == ("replay refused: GPUs: this box has 1 (from rocm-smi), the job had 2 GPU(s) (a run here "
                                 "would not reproduce the job; --force runs it anyway)")
    out = capsys.readouterr().out
    assert "replay: GPUs REFUSED: this box has 1" in out and "replay: units:" not in out  # said first, then stopped
    assert reproduce.replay_report(str(report_dir), env=env, workspace=workspace, today=TODAY, dry_run=True, force=True,
                                   failed=True, **one_gpu) == 0
    out = capsys.readouterr().out
    assert "(--force: running anyway)" in out
    lines = [line for line in out.splitlines() if line.startswith("replay:   [")]
    assert [line.split("] ")[1].split(" (")[0] for line in lines] == [u.name for u in reproduce.select(record, failed=True)]
    assert f"would pull {IMAGE}@{DIGEST} from" in out
    assert not (workspace / "ci-reports" / "replay-fx-a").exists()  # a dry run writes nothing


def test_a_report_of_another_stage_or_arch_is_said_or_skipped(world):
    workspace, _config, env = world
    record, run_plan = record_of(world)
    report_dir = write_report(world, record, run_plan)
    with pytest.raises(UserError, match=r"a report of fx-a, not fx-b: run `nox -s fx_a -- --replay"):
        reproduce.replay_report(str(report_dir), env=env, workspace=workspace, today=TODAY, stage="fx-b")
    skipped = []
    assert reproduce.replay_report(str(report_dir), env=env, workspace=workspace, today=TODAY, stage="fx-a",
                                   runner_arch="mi325", skip=skipped.append) == 0
    assert skipped == ["runner_arch mi325 is not the report's arch mi300"]


# --- the nox door ---------------------------------------------------------------------------------------
def _tools(tmp_path: Path, **outputs: str) -> str:
    """Stand-ins for the device tools on PATH, printing recorded outputs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool, text in outputs.items():
        (bin_dir / f"{tool}.txt").write_text(text)
        script = bin_dir / tool.replace("_", "-")
        condition = '[ "$1" = --showmeminfo ]' if tool == "rocm_smi" else "true"
        script.write_text(f'#!/bin/sh\nif {condition}; then cat "{bin_dir / f"{tool}.txt"}"; else exit 1; fi\n')
        script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def test_the_door_says_how_this_box_differs_then_refuses_or_lists(world, tmp_path):
    _workspace, _config, env = world
    record, run_plan = record_of(world)
    report_dir = write_report(world, record, run_plan)
    door_env = base_env(**{k: v for k, v in env.items() if k not in ("HF_TOKEN", "DOCKERHUB_AMD_TOKEN", "DOCKERHUB_AMD_USERNAME")})
    devices = FIXTURES / "devices"
    seven = _tools(tmp_path, rocminfo=(devices / "rocminfo_mi300x.txt").read_text(),
                   rocm_smi=(devices / "rocm-smi_showmeminfo_vram_mi300x.txt").read_text())
    done = run_door("nox", "-s", "fx_a", "--", "--replay", "ci-reports/fx-a", "--dry-run", env={**door_env, "PATH": seven})
    assert done.code == 0, done.err
    assert "replay: arch: same, mi300 (MI300X, gfx942) (from rocminfo)" in done.out
    assert "replay: GPUs DIFFERS: this box has 7 (from rocm-smi), the job had 2 GPU(s)" in done.out
    assert f"replay: units: {len(record.units)} of {len(record.units)}, all, in the recorded order" in done.out
    assert "fx_a(runner_arch='mi325'): skipped (runner_arch mi325 is not the report's arch mi300)" in done.err
    small = _tools(tmp_path / "one", rocm_smi=(devices / "rocm-smi_showmeminfo_vram_small.txt").read_text())
    refused = run_door("nox", "-s", "fx_a", "--", "--replay", str(report_dir), "--dry-run", env={**door_env, "PATH": small})
    assert refused.code == 2
    assert [line for line in refused.err.splitlines() if line.startswith("error:")] == [
        ("error: replay refused: GPUs: this box has 1 (from rocm-smi), the job had 2 GPU(s) (a run here would not "
        "reproduce the job; --force runs it anyway)")]
    assert "Traceback" not in refused.err
    other = _tools(tmp_path / "mi350", amd_smi=(devices / "amd-smi_static_mi350x.txt").read_text())
    gfx = run_door("nox", "-s", "fx_a", "--", "--replay", str(report_dir), "--dry-run", "--failed",
                   env={**door_env, "PATH": other})
    assert gfx.code == 2 and "the image's kernels are built for gfx942" in gfx.err
    forced = run_door("nox", "-s", "fx_a", "--", "--replay", str(report_dir), "--dry-run", "--failed", "--force",
                      env={**door_env, "PATH": other})
    assert forced.code == 0 and "(--force: running anyway)" in forced.out


@pytest.mark.parametrize("argv, message", [
    (["--replay", "x", "--suite", FIXED], ("error: --suite cannot be used with --replay: the report fixes it (allowed "
                                          "with --replay: --only FILE (repeatable), --failed, --force, --report-dir, --dry-run)")),
    (["--replay", "x", "--retries", "0"], "error: --retries cannot be used with --replay"),
    (["--failed"], "error: --failed needs --replay PATH_OR_URL"),
    (["--replay", "nowhere"], "error: --replay nowhere: no such file or folder"),
])
def test_door_flags_that_do_not_fit_are_one_line_and_exit_2(world, argv, message):
    workspace, _config, env = world
    door_env = base_env(SGL_CI_CONFIG_DIR=env["SGL_CI_CONFIG_DIR"], GITHUB_WORKSPACE=str(workspace))
    done = run_door("nox", "-s", "fx_a", "--", *argv, env=door_env)
    errors = [line for line in done.err.splitlines() if line.startswith("error:")]
    assert done.code == 2 and len(errors) == 1 and errors[0].startswith(message), done.err
