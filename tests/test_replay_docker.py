"""Replaying with a real Docker Engine: a report written by a real `nox -s demo` run maps back to the
same files, order, image digest and settings (and the demo's own replay of its flaky file pulled
that digest from the LAN mirror and reproduced the flake); the pinned pull against two loopback
registries: LAN first, the public one when the mirror fails, a digest neither has is a failure."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from docker import errors as docker_errors

from ci import replay, reproduce
from ci.config import OVERRIDE_ENV, load_config
from ci.errors import ToolFailure
from ci.hostpull import image_lock
from ci.images import ImageName
from ci.registry import connect, local_image
from ci.runner import RunPlan
from ci.stage import planned_files
from tests.conftest import base_env, run_door
from tests.support.registry import build_image, free_port, start_registry

pytestmark = pytest.mark.docker

REPOSITORY = "sgl-ci-test/replay-pin"  # nobody else's repository: other Docker tests may run at the same time
TAG = "v0.5.10-rocm700-mi30x-20260822"


@pytest.fixture(scope="module")
def demo(docker):
    done = run_door("nox", "-s", "demo", timeout=900)
    assert done.code == 0, done.out[-3000:] + done.err[-3000:]
    workspace = Path(re.search(r"workspace kept for a look: (\S+)", done.out).group(1))
    env = {"GITHUB_WORKSPACE": str(workspace), OVERRIDE_ENV: str(workspace / "ci-demo-config.yaml")}
    return done.out, workspace, env


@pytest.mark.timeout(900)
def test_the_demo_ends_by_replaying_its_flaky_file_by_digest(demo, docker):
    out, workspace, _ = demo
    reports = workspace / "ci-reports"
    digest = json.loads((reports / "stage-demo" / "durations.json").read_text())["run"]["digest"]
    tail = out[out.index("[demo] the local copy of"):]
    lines = [line for line in tail.splitlines() if line.startswith("replay:")]
    assert [line.split(":")[1].strip().split(" ")[0] for line in lines[2:6]] == ["arch", "GPUs", "toolkit", "test"]
    assert "replay: GPUs: unknown here, no rocm-smi or nvidia-smi answered" in tail
    assert "replay: units: 1 of 6, --failed (failed, timed out or flaky in the report), in the recorded order: " \
           "test_flaky.py (flaky)" in tail
    assert re.search(rf"image 127\.0\.0\.1:\d+/rocm/sgl-dev@{digest}: source=lan \(127\.0\.0\.1:\d+\) digest={digest}", tail)
    assert "--- test_flaky.py: FLAKY" in tail  # the flake reproduced in a fresh container
    assert "stage-demo: PASSED (flaky): 0 passed, 1 flaky, 0 failed, 0 not run" in tail
    summary = (reports / "stage-demo" / "summary.md").read_text().rstrip("\n").splitlines()
    assert summary[-1].endswith(f"`nox -s stage_demo -- --replay {reports / 'stage-demo'}`")
    again = (reports / "replay-stage-demo" / "summary.md").read_text().rstrip("\n").splitlines()
    lan = re.search(r"registries on loopback: LAN (\S+),", out).group(1)
    pinned = [name for image in docker.images.list() for name in image.attrs.get("RepoDigests") or []
              if name.startswith(f"{lan}/")]
    assert pinned == []  # the demo forgets the image it pinned, as it forgets the one it pulled
    note = f"- replay of {reports / 'stage-demo' / 'replay.json'} (--failed (failed, timed out or flaky in the report); CI ran"
    assert any(line.startswith(note) for line in again)
    assert again[-1].endswith(f"`nox -s stage_demo -- --replay {reports / 'replay-stage-demo'}`")


@pytest.mark.timeout(900)
def test_the_demo_report_replays_to_the_same_files_order_digest_and_settings(demo):
    _, workspace, env = demo
    reports = workspace / "ci-reports"
    ci_plan = RunPlan.load(reports / "stage-demo" / "plan.json")
    ci_run = json.loads((reports / "stage-demo" / "durations.json").read_text())["run"]
    config = load_config(env=env)
    record, _ = replay.load("ci-reports/stage-demo", workspace, config.replay)
    assert [u.name for u in record.units] == [f.path for f in ci_plan.files]
    assert (record.image, record.digest) == (ci_run["image"], ci_run["digest"])
    # The whole record, mapped back, is the very plan the runner got in CI.
    plan = reproduce.replay_plan(config, record, record.units, workspace, "the report")
    assert planned_files(config, plan, workspace) == ci_plan.files
    assert (plan.timeout_minutes * 60, plan.stage.kill_grace_s, record.retries, record.continue_on_error) == (
        ci_plan.stage_timeout_s, ci_plan.kill_grace_s, ci_plan.retries, ci_plan.continue_on_error)
    # What the demo's replay ran: the flaky file with CI's settings, in the image of CI's digest.
    replayed = RunPlan.load(reports / "replay-stage-demo" / "plan.json")
    flaky = [f for f in ci_plan.files if f.path == "test_flaky.py"]
    assert replayed.files == tuple(flaky)
    assert {k: v for k, v in asdict(replayed).items() if k not in ("files", "report_dir")} == \
           {k: v for k, v in asdict(ci_plan).items() if k not in ("files", "report_dir")}
    assert json.loads((reports / "replay-stage-demo" / "durations.json").read_text())["run"]["digest"] == record.digest
    # The replay's settings override holds CI's known issues, bounds and env.
    override = yaml.safe_load((reports / "replay-stage-demo" / reproduce.OVERRIDE_FILE).read_text())
    assert [i["test"] for i in override["known_issues"]] == [i.test for i in record.known_issues]
    assert override["thresholds"]["test_demo_throughput"]["output_throughput"]["arch"] == {"mi300": 1000}
    # The JUnit carries the record.
    junit = (reports / "stage-demo" / "junit.xml").read_text()
    assert f'name="sgl-ci.replay.image.digest" value="{record.digest}"' in junit


@pytest.mark.timeout(300)
def test_a_dry_run_of_the_demo_report_lists_its_files_in_order(demo):
    _, _, env = demo
    done = run_door("nox", "-s", "stage_demo", "--", "--replay", "ci-reports/stage-demo", "--dry-run",
                    "--only", "test_fast.py", "--only", "test_sampling.py", env=base_env(**env))
    assert done.code == 0, done.err
    listed = re.findall(r"replay:   \[\d/2\] (\S+) \((\w+), timeout (\d+) s", done.out)
    assert listed == [("test_sampling.py", "pytest", "60"), ("test_fast.py", "unittest", "60")]  # CI's order, not --only's


@pytest.fixture(scope="module")
def registries(docker, tmp_path_factory):
    root = tmp_path_factory.mktemp("replay-registries")
    lan, public = start_registry(root / "lan"), start_registry(root / "public")
    build_image(docker, f"{REPOSITORY}:source", (200_000,), seed=7)
    digests = set()
    for reg in (lan, public):
        docker.images.get(f"{REPOSITORY}:source").tag(f"{reg.address}/{REPOSITORY}", TAG)
        for event in docker.api.push(f"{reg.address}/{REPOSITORY}", TAG, stream=True, decode=True):
            assert "error" not in event, event
            if (event.get("aux") or {}).get("Digest"):
                digests.add(event["aux"]["Digest"])
        docker.images.remove(f"{reg.address}/{REPOSITORY}:{TAG}")
    docker.images.remove(f"{REPOSITORY}:source")
    assert len(digests) == 1
    yield lan, public, digests.pop()
    _forget(docker)
    lan.stop()
    public.stop()


def _forget(docker) -> None:
    for image in docker.images.list(name=f"*/{REPOSITORY}") + docker.images.list(name=REPOSITORY):
        for name in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
            with contextlib.suppress(docker_errors.ImageNotFound):  # went with an earlier name of the same image
                docker.images.remove(name, force=True)


def _puller(lan: str, public: str, tmp_path: Path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"pull": {
        "lan": {"first_progress_s": 2, "window_s": 3, "budget_s": 60, "hold_s": 0, "jitter_s": 0},
        "host": {"state_dir": str(tmp_path / "pull-state")},
        "public": {"attempts": 2, "initial_wait_s": 0.1, "max_wait_s": 0.2, "jitter_s": 0, "stall_s": 3},
        "probe_timeout_s": 10}}))
    env = {OVERRIDE_ENV: str(override), "LOCAL_DOCKER_REGISTRY": lan, "PUBLIC_DOCKER_REGISTRY": public}
    out, err = io.StringIO(), io.StringIO()
    return reproduce.PinnedPuller(load_config(env=env), connect(30), env, out, err), out, err


@pytest.mark.timeout(300)
def test_the_pin_is_pulled_lan_first_then_public_and_a_missing_digest_fails(docker, registries, tmp_path):
    lan, public, digest = registries
    _forget(docker)
    image = ImageName(REPOSITORY, TAG)
    puller, out, err = _puller(lan.address, public.address, tmp_path)
    outcome = puller.pull_pinned(image, digest)
    assert (outcome.source, str(outcome.image), outcome.digest) == ("lan", f"{lan.address}/{REPOSITORY}@{digest}", digest)
    assert local_image(docker, str(outcome.image)).has_digest(digest) and "[local-pull]" not in err.getvalue()
    assert str(outcome.image.plain) == f"{REPOSITORY}:{TAG}"  # what the report records
    assert local_image(docker, f"{REPOSITORY}:{TAG}") is None  # nothing retagged
    again, out, _ = _puller(lan.address, public.address, tmp_path)
    # Another job of the host is pulling the same pin into this engine: this one waits its turn.
    holding, release = threading.Event(), threading.Event()

    def other_job():
        with image_lock(again.state_dir, again.engine_id(), f"{REPOSITORY}@{digest}", lambda line: None):
            holding.set()
            release.wait(10)

    other = threading.Thread(target=other_job)
    other.start()
    holding.wait(10)
    threading.Timer(1.0, release.set).start()
    waited = again.pull_pinned(image, digest)
    other.join()
    assert waited.source == "local" and "already present locally" in out.getvalue()
    assert waited.waited_s >= 0.9 and "waiting for another job's pull" in out.getvalue()
    _forget(docker)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: the mirror is down
    puller, out, err = _puller(dead, public.address, tmp_path)
    outcome = puller.pull_pinned(image, digest)
    assert (outcome.source, str(outcome.image)) == ("public", f"{public.address}/{REPOSITORY}@{digest}")
    assert f"LAN pull of {dead}/{REPOSITORY}@{digest} failed; falling back to {public.address}" in err.getvalue()
    assert "[local-pull] " in err.getvalue()
    _forget(docker)
    puller, _, _ = _puller(lan.address, public.address, tmp_path)
    with pytest.raises(ToolFailure, match=rf"pull of {public.address}/{REPOSITORY}@sha256:0+ failed: not found \(not retried\)"):
        puller.pull_pinned(image, "sha256:" + "0" * 64)
