"""pull-image and mirror-image against a real Docker Engine, two real registries (the LAN mirror,
and a stand-in public registry with htpasswd auth) and the fault proxy in front of either."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci import publish
from ci.config import load_config
from ci.errors import ToolFailure
from ci.images import ImageName, candidate_images
from ci.pull import Puller, pull_image
from ci.registry import connect, local_image
from demo.sandbox import drop_tag
from tests.conftest import base_env, run_door
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.registry import Registry, build_image, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

USER = "ci-bot"
CANARY = "canary-7f3a9c-not-a-real-token"
TAG = "v0.5.10-rocm700-mi30x-20260101"
LAYERS = (3_000_000, 3_000_000, 3_000_000)
# Short, test-sized policy: every number the pull uses comes from config, so tests set their own.
OVERRIDE = """
pull:
  lan: {first_progress_s: 2, window_s: 3, budget_s: 6, public_bytes_per_s: 104857600, faster_by: 2, hold_s: 0, jitter_s: 0}
  host: {state_dir: %(state)s, public_slots: 2, slot_poll_s: 0.1, rates_kept: 5}
  public: {attempts: 3, initial_wait_s: 0.2, max_wait_s: 1, jitter_s: 0.1, stall_s: 3}
  login: {attempts: 2, initial_wait_s: 0.1, max_wait_s: 0.2, jitter_s: 0}
  probe_timeout_s: 10
  progress_log_interval_s: 0.5
  disk_headroom_bytes: 0
"""


@dataclass
class World:
    lan: Registry
    public: Registry
    digest: str
    override: Path


def _push(client, registry: Registry, source: str, tag: str) -> str:
    target = f"{registry.address}/rocm/sgl-dev"
    client.images.get(source).tag(target, tag)
    digest = None
    for event in client.api.push(target, tag, stream=True, decode=True):
        assert "error" not in event, event
        digest = (event.get("aux") or {}).get("Digest", digest)
    client.images.remove(f"{target}:{tag}")
    return digest


@pytest.fixture(scope="module")
def world(docker, tmp_path_factory):
    root = tmp_path_factory.mktemp("registries")
    lan = start_registry(root / "lan")
    public = start_registry(root / "public", user=USER, password=CANARY)
    docker.login(username=USER, password=CANARY, registry=public.address)
    build_image(docker, "sgl-ci-test/source:1", LAYERS, seed=1)
    digests = {_push(docker, r, "sgl-ci-test/source:1", TAG) for r in (lan, public)}
    assert len(digests) == 1
    docker.images.remove("sgl-ci-test/source:1")  # so that every pull really downloads its layers
    override = root / "override.yaml"
    override.write_text(OVERRIDE % {"state": root / "pull-state"})
    yield World(lan, public, digests.pop(), override)
    lan.stop()
    public.stop()
    drop_test_images(docker)


def drop_test_images(docker):
    """Remove every local name of the test tag (and only of it: a developer's images stay)."""
    drop_tag(docker, "rocm/sgl-dev", TAG)


@pytest.fixture(autouse=True)
def no_local_copy(docker):
    """Each test starts with no local copy under any name, so each pull is real."""
    drop_test_images(docker)


def puller(world: World, lan: str | None, public: str | None = None, **extra: str) -> tuple[Puller, io.StringIO, io.StringIO, list[float]]:
    env = {"SGL_CI_CONFIG_OVERRIDE": str(world.override), "PUBLIC_DOCKER_REGISTRY": public or world.public.address,
           "DOCKERHUB_AMD_USERNAME": USER, "DOCKERHUB_AMD_TOKEN": CANARY, **extra}
    if lan:
        env["LOCAL_DOCKER_REGISTRY"] = lan
    config = load_config(env=env)
    out, err, waits = io.StringIO(), io.StringIO(), []
    return Puller(config, connect(30), env, out, err, sleep=waits.append), out, err, waits


IMAGE = ImageName("rocm/sgl-dev", TAG)


def test_healthy_lan_pull_retags_to_the_plain_name(docker, world):
    p, out, err, _ = puller(world, world.lan.address)
    outcome = p.pull(IMAGE)
    assert (outcome.source, outcome.registry, outcome.digest) == ("lan", world.lan.address, world.digest)
    assert local_image(docker, IMAGE) is not None
    assert local_image(docker, IMAGE.on(world.lan.address)).has_digest(world.digest)  # provenance kept
    assert "[local-pull]" not in err.getvalue()
    assert outcome.size_bytes >= sum(LAYERS)


def test_present_at_the_registry_digest_downloads_nothing(docker, world):
    puller(world, world.lan.address)[0].pull(IMAGE)
    proxy = FaultProxy(world.lan.port)
    try:
        p, out, _, _ = puller(world, proxy.address)
        outcome = p.pull(IMAGE)
    finally:
        proxy.close()
    assert (outcome.source, outcome.attempts, outcome.digest) == ("local", 0, world.digest)
    assert proxy.downstream_bytes == 0
    assert "already present locally at the registry's digest" in out.getvalue()


def _lan_fault_falls_back(world, fault: Fault | None, bound_s: float):
    proxy = FaultProxy(world.lan.port, fault) if fault else None
    lan = proxy.address if proxy else "127.0.0.1:9"  # nothing listens on the discard port
    try:
        p, out, err, _ = puller(world, lan)
        started = time.monotonic()
        outcome = p.pull(IMAGE)
        took = time.monotonic() - started
        if proxy:
            before = proxy.downstream_bytes
            time.sleep(1.5)
            assert proxy.downstream_bytes - before < 64 * 1024, "the daemon kept pulling the abandoned image"
    finally:
        if proxy:
            proxy.close()
    lines = err.getvalue().splitlines()
    assert lines[0] == f"LAN pull of {lan}/rocm/sgl-dev:{TAG} failed; falling back to {world.public.address}"
    assert len(lines) >= 2 and all(line.startswith("[local-pull] ") for line in lines[1:])
    assert (outcome.source, outcome.digest) == ("public", world.digest)
    assert took < bound_s, f"fallback took {took:.1f} s"
    return lines


def test_lan_refused_falls_back_at_once(world):
    lines = _lan_fault_falls_back(world, None, bound_s=2 + 2)
    assert "connection refused" in lines[1]


def test_lan_hung_falls_back_after_the_deadline(world):
    lines = _lan_fault_falls_back(world, Fault(mode="hang"), bound_s=2 + 2 + 1)  # deadline + 2 s + the public pull
    assert "no progress for 2 s" in lines[1]


def test_lan_stalled_mid_layer_falls_back_after_the_deadline(world):
    lines = _lan_fault_falls_back(world, Fault(mode="stall", stall_after_bytes=1_000_000), bound_s=2 + 2 + 1)
    assert "no progress" in lines[1]


def test_lan_crawling_past_the_budget_falls_back_after_the_window(world):
    # 300 kB/s a connection: ~10 s for the 9 MB image, past the 6 s budget; public is estimated faster.
    lines = _lan_fault_falls_back(world, Fault(mode="throttle", bytes_per_s=300_000), bound_s=3 + 2 + 1)
    assert "predicted time-to-image" in lines[1] and "budget 6 s" in lines[1]


def test_a_slow_mirror_within_budget_keeps_its_job(world, tmp_path):
    # 500 kB/s a connection: ~6 s for the image, within a 30 s budget: no fallback, one LAN pull.
    override = tmp_path / "o.yaml"
    override.write_text(OVERRIDE.replace("budget_s: 6", "budget_s: 30") % {"state": tmp_path / "state"})
    proxy = FaultProxy(world.lan.port, Fault(mode="throttle", bytes_per_s=500_000))
    try:
        p, out, err, _ = puller(world, proxy.address, SGL_CI_CONFIG_OVERRIDE=str(override))
        outcome = p.pull(IMAGE)
    finally:
        proxy.close()
    assert (outcome.source, outcome.digest) == ("lan", world.digest)
    assert "[local-pull]" not in err.getvalue()


def test_plain_progress_lines_in_a_log(world, tmp_path):
    # ~9 MB over three parallel layer connections at 1.5 MB/s each: about 2 s of pulling,
    # logged every 0.1 s (the interval is config; this test sets a fine one).
    override = tmp_path / "o.yaml"
    override.write_text(OVERRIDE.replace("progress_log_interval_s: 0.5", "progress_log_interval_s: 0.1") % {"state": tmp_path / "state"})
    proxy = FaultProxy(world.lan.port, Fault(mode="throttle", bytes_per_s=1_500_000))
    try:
        p, out, _, _ = puller(world, proxy.address, SGL_CI_CONFIG_OVERRIDE=str(override))
        p.pull(IMAGE)
    finally:
        proxy.close()
    progress = [line for line in out.getvalue().splitlines() if line.startswith(f"pull {proxy.address}/rocm/sgl-dev:{TAG}: ")]
    assert len(progress) >= 5, out.getvalue()
    assert re.search(r": [0-9.]+ MiB of [0-9.]+ MiB$", progress[-1])


def test_rate_limited_login_is_retried_not_turned_into_anonymous_pulls(world):
    # The daemon's login pings /v2/ unauthenticated (for the challenge), then with credentials:
    # the second answers 429, as a rate-limited registry would.
    proxy = FaultProxy(world.public.port, Fault(mode="status", status=429, status_times=1, match=b"GET /v2/ ", pass_first=1))
    try:
        p, out, err, waits = puller(world, None, public=proxy.address)
        outcome = p.pull(IMAGE)
    finally:
        proxy.close()
    assert proxy.statuses_sent == 1 and len(waits) >= 1
    assert "login: attempt 1/2 failed" in out.getvalue()
    assert f"logged in to {proxy.address} as {USER}" in out.getvalue()
    assert "warning" not in err.getvalue()
    assert outcome.source == "public"


def test_lan_digest_mismatch_uses_the_public_image(docker, world, tmp_path):
    other = start_registry(tmp_path / "other-lan")
    try:
        build_image(docker, "sgl-ci-test/other:1", (100_000,), seed=2)
        _push(docker, other, "sgl-ci-test/other:1", TAG)
        docker.images.remove("sgl-ci-test/other:1")
        p, _, err, _ = puller(world, other.address)
        outcome = p.pull(IMAGE)
    finally:
        other.stop()
    assert (outcome.source, outcome.digest) == ("public", world.digest)
    assert "[local-pull] digest mismatch: LAN has sha256:" in err.getvalue()
    assert local_image(docker, IMAGE).has_digest(world.digest)


@pytest.mark.parametrize("status", [503, 429])
def test_public_transient_errors_are_retried_with_backoff(world, status):
    # The unauthenticated mirror stands in as upstream. The daemon asks for the manifest by tag
    # twice per try (HEAD, then GET): the digest probe takes 2 statuses, two pull attempts 4 more.
    proxy = FaultProxy(world.lan.port, Fault(mode="status", status=status, status_times=6,
                                             match=f"/v2/rocm/sgl-dev/manifests/{TAG} ".encode()))
    try:
        p, out, err, waits = puller(world, None, public=proxy.address, DOCKERHUB_AMD_TOKEN="")
        outcome = p.pull(IMAGE)
    finally:
        proxy.close()
    assert outcome.source == "public"
    assert outcome.attempts == 3 and proxy.statuses_sent == 6
    assert "[local-pull]" not in err.getvalue()  # no LAN configured: straight to public
    assert len(waits) == outcome.attempts - 1 and all(0 < w <= 1.1 for w in waits)
    assert "retrying in" in out.getvalue()


def test_public_404_fails_at_once(world):
    p, out, _, waits = puller(world, None)
    with pytest.raises(ToolFailure, match="not found \\(not retried\\)"):
        p.pull(ImageName("rocm/sgl-dev", "v0.0.0-missing"))
    assert waits == []


def test_public_401_fails_at_once_and_login_failure_only_warns(world):
    p, out, err, waits = puller(world, None, DOCKERHUB_AMD_TOKEN="wrong-" + CANARY)
    with pytest.raises(ToolFailure, match="unauthorized or denied \\(not retried\\)") as caught:
        p.pull(IMAGE)
    assert f"warning: login to {world.public.address} failed" in err.getvalue()
    assert "pulling anonymously" in err.getvalue()
    # The login's 401 is retried per pull.login (the daemon reports a rate-limited login as 401);
    # the pull's 401 is not retried at all.
    assert "login: attempt 1/2 failed" in out.getvalue() and len(waits) == 1 and waits[0] <= 0.2
    assert CANARY not in out.getvalue() + err.getvalue() + str(caught.value)


def test_public_stall_is_retried_then_reported(world):
    proxy = FaultProxy(world.public.port, Fault(mode="stall", stall_after_bytes=500_000))
    try:
        p, out, _, waits = puller(world, None, public=proxy.address)
        with pytest.raises(ToolFailure, match="gave up after 3 attempt\\(s\\).*no progress for 3 s"):
            p.pull(IMAGE)
    finally:
        proxy.close()
    assert len(waits) == 2


def test_error_inside_a_200_stream_is_an_error(docker, world, tmp_path):
    broken = start_registry(tmp_path / "broken")
    try:
        build_image(docker, "sgl-ci-test/broken:1", (200_000,), seed=3)
        _push(docker, broken, "sgl-ci-test/broken:1", TAG)
        docker.images.remove("sgl-ci-test/broken:1")
        blobs = sorted((broken.root / "data").rglob("blobs/sha256/*/*/data"), key=lambda f: f.stat().st_size)
        victim = blobs[-1]  # the biggest blob is the random layer
        victim.write_bytes(os.urandom(victim.stat().st_size))
        p, out, err, waits = puller(world, None, public=broken.address)
        with pytest.raises(ToolFailure, match="pull of .* failed: unclassified error \\(not retried\\): .*verification failed") :
            p.pull(IMAGE)
    finally:
        broken.stop()
    assert waits == []
    assert local_image(docker, IMAGE) is None


def test_not_enough_disk_fails_early_and_is_not_retried(world, tmp_path):
    override = tmp_path / "o.yaml"
    override.write_text(OVERRIDE.replace("disk_headroom_bytes: 0", "disk_headroom_bytes: 1000000000000") % {"state": tmp_path / "state"})
    env = {"SGL_CI_CONFIG_OVERRIDE": str(override), "PUBLIC_DOCKER_REGISTRY": world.public.address,
           "DOCKERHUB_AMD_USERNAME": USER, "DOCKERHUB_AMD_TOKEN": CANARY}
    waits: list[float] = []
    p = Puller(load_config(env=env), connect(30), env, io.StringIO(), io.StringIO(), sleep=waits.append)
    with pytest.raises(ToolFailure, match="out of disk \\(not retried\\).*not enough disk"):
        p.pull(IMAGE)
    assert waits == []


def pinned_images(config):
    """The images config with a versions override: candidates are names to probe, as before discovery."""
    return dataclasses.replace(config.images, versions=("v0.5.10", "v0.5.9"))


def test_resolution_takes_the_newest_existing_tag(docker, world):
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(world.override), "PUBLIC_DOCKER_REGISTRY": world.public.address})
    today = dt.date(2026, 1, 3)  # TAG's date is 2026-01-01: two days back
    candidates = candidate_images(pinned_images(config), config.arches["mi300"], today)
    p, out, _, _ = puller(world, None)
    assert p.resolve(candidates) == IMAGE  # the public registry needs the login: resolve does it
    assert f"resolved {IMAGE} (found in {world.public.address})" in out.getvalue()
    build_image(docker, "rocm/sgl-dev:v0.5.9-rocm700-mi30x-20260102", seed=4)
    try:
        assert p.resolve(candidates) == ImageName("rocm/sgl-dev", "v0.5.9-rocm700-mi30x-20260102")  # newer, and local
    finally:
        docker.images.remove("rocm/sgl-dev:v0.5.9-rocm700-mi30x-20260102")


def test_resolution_failure_lists_every_tag_and_where(world):
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(world.override), "PUBLIC_DOCKER_REGISTRY": world.public.address})
    candidates = candidate_images(pinned_images(config), config.arches["mi355"], dt.date(2026, 1, 3))
    p, _, _, _ = puller(world, None)
    with pytest.raises(ToolFailure) as caught:
        p.resolve(candidates)
    message = str(caught.value)
    assert message.count("(local: absent;") == len(candidates) == 14
    assert f"rocm/sgl-dev:v0.5.10-rocm700-mi35x-20260103 (local: absent; {world.public.address}: not-found)" in message


def test_pull_image_takes_the_newest_tag_in_the_registrys_tag_list(docker, world, capsys):
    """No versions in config: the public registry's tag list (behind its htpasswd login) names the
    candidates; the newest is pulled, LAN first, with no probe of names that do not exist."""
    env = {"SGL_CI_CONFIG_OVERRIDE": str(world.override), "PUBLIC_DOCKER_REGISTRY": world.public.address,
           "LOCAL_DOCKER_REGISTRY": world.lan.address, "DOCKERHUB_AMD_USERNAME": USER, "DOCKERHUB_AMD_TOKEN": CANARY}
    config = load_config(env=env)
    assert config.images.versions == ()
    outcome = pull_image(config, connect(30), env, config.arches["mi300"], None, None, dt.date(2026, 1, 3))
    out = capsys.readouterr().out
    assert outcome.image == IMAGE and outcome.source == "lan" and outcome.digest == world.digest
    assert f"tag list of {world.public.address}: 1 tag(s) in 2 request(s)" in out  # the login's challenge, then the list
    assert f"resolved {IMAGE} (newest in {world.public.address}'s tag list)" in out
    assert CANARY not in out


def test_mirror_pushes_to_lan_and_verifies_the_digest(docker, world, tmp_path):
    mirror = start_registry(tmp_path / "mirror")
    try:
        p, out, _, _ = puller(world, mirror.address)
        pushed = publish.mirror(p, IMAGE)
        assert pushed == world.digest
        assert "matches the source" in out.getvalue()
        fresh = connect(30)
        assert fresh.api.inspect_distribution(f"{mirror.address}/rocm/sgl-dev:{TAG}")["Descriptor"]["digest"] == world.digest
    finally:
        mirror.stop()


def _cmdlines() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return found


def test_canary_token_never_appears_in_output_argv_or_errors(world, tmp_path):
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs"
    env = base_env(LOCAL_DOCKER_REGISTRY="127.0.0.1:9", PUBLIC_DOCKER_REGISTRY=world.public.address,
                   DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=CANARY, GITHUB_ACTIONS="true",
                   GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(outputs),
                   SGL_CI_CONFIG_OVERRIDE=str(world.override))
    seen: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(c for c in _cmdlines() if CANARY in c)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ok = run_door("invoke", "pull-image", "--image", f"rocm/sgl-dev:{TAG}", env=env)
        bad = run_door("invoke", "pull-image", "--image", "rocm/sgl-dev:v0.0.0-missing", env=env)
    finally:
        stop.set()
        watcher.join()
    assert ok.code == 0, ok.err
    assert bad.code == 1
    assert "::group::pull" in ok.out and "::endgroup::" in ok.out
    assert seen == [], "the token was in a process's argv"
    for done in (ok, bad):
        lines = (done.out + done.err).splitlines()
        assert lines[0] == f"::add-mask::{CANARY}"  # masked before anything else is printed
        assert not any(CANARY in line for line in lines[1:])
    for written in (summary, outputs):
        assert not written.exists() or CANARY not in written.read_text()


def test_pull_image_command_as_written_in_the_issue(world):
    env = base_env(LOCAL_DOCKER_REGISTRY=world.lan.address, PUBLIC_DOCKER_REGISTRY=world.public.address)
    done = run_door("invoke", "pull-image", "--image", f"rocm/sgl-dev:{TAG}", env=env)
    assert done.code == 0, done.err
    assert done.out.strip().splitlines()[-1].startswith(f"image rocm/sgl-dev:{TAG}: source=lan ({world.lan.address}) digest={world.digest}")
