"""The pull's pure parts: the watchdog, the layer tally, and error classification (messages as
the real daemon printed them against real registries and the fault proxy)."""

from __future__ import annotations

import pytest

from ci.pull import LayerTally
from ci.pullpace import ImageSize, Leave, Watchdog
from ci.registry import classify


def test_watchdog_fires_when_nothing_arrives():
    dog = Watchdog(idle_s=5, window_s=10, started=100.0)
    assert dog.verdict(104.9) is None
    verdict = dog.verdict(105.0)
    assert verdict.leave is Leave.STALLED and "no progress for 5.0 s" in verdict.reason


def test_progress_resets_the_idle_deadline_but_repeated_totals_do_not():
    dog = Watchdog(idle_s=5, window_s=10, started=0.0)
    dog.observe(4.0, 1000)
    assert dog.verdict(8.0) is None
    dog.observe(8.5, 1000)  # an event with no new bytes ("Waiting", "Retrying in 3 seconds")
    assert dog.verdict(9.0) is not None


def test_tally_sums_layers_and_phases():
    tally = LayerTally()
    tally.add({"status": "Downloading", "id": "a", "progressDetail": {"current": 100, "total": 1000}})
    tally.add({"status": "Downloading", "id": "b", "progressDetail": {"current": 50, "total": 500}})
    tally.add({"status": "Downloading", "id": "a", "progressDetail": {"current": 400, "total": 1000}})
    tally.add({"status": "Extracting", "id": "a", "progressDetail": {"current": 200, "total": 1000}})
    tally.add({"status": "Pulling fs layer", "id": "c", "progressDetail": {}})
    assert tally.done == 400 + 50 + 200
    assert tally.download_total == 1500
    assert tally.downloaded == 1000 + 50  # the download alone; a layer being extracted was fetched in full
    tally.add({"status": "Download complete", "id": "b", "progressDetail": {}})
    assert tally.downloaded == 1000 + 500


def test_tally_names_the_layers_the_engine_already_has():
    """The daemon's words for a layer it will not download, as docker 20.10 streamed them here for
    an image sharing its base layer with one already pulled; the id is the manifest digest's
    first 12 hex (ci.pullpace.layer_id), checked on that pull."""
    tally = LayerTally()
    tally.add({"status": "Already exists", "id": "5f1b4e2d9c3a", "progressDetail": {}})
    tally.add({"status": "Pulling fs layer", "id": "0c7d2e8a1b4f", "progressDetail": {}})
    assert tally.present == {"5f1b4e2d9c3a"} and tally.downloaded == 0


@pytest.mark.parametrize(
    "message, retryable, kind",
    [
        ("manifest for 127.0.0.1:59241/rocm/sgl-dev:nope not found: manifest unknown: manifest unknown", False, "not-found"),
        ('Head "http://127.0.0.1:41301/v2/rocm/sgl-dev/manifests/nope": no basic auth credentials', False, "unauthorized"),
        ("pull access denied for rocm/sgl-dev, repository does not exist or may require 'docker login'", False, "unauthorized"),
        ("unauthorized: authentication required", False, "unauthorized"),
        ("received unexpected HTTP status: 503 Service Unavailable", True, "transient"),
        ("toomanyrequests: You have reached your pull rate limit (test proxy)", True, "transient"),
        ('Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused', True, "transient"),
        ("Get \"https://registry.example/v2/\": net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)", True, "transient"),
        ("unexpected EOF", True, "transient"),
        ("filesystem layer verification failed for digest sha256:abc", False, "unknown"),
    ],
)
def test_classify(message, retryable, kind):
    failure = classify(message)
    assert (failure.retryable, failure.kind) == (retryable, kind)


def test_mirror_says_so_when_the_pulled_image_is_gone_and_no_digest_is_known(monkeypatch):
    """No source digest from the registry, nothing local before the pull and nothing after it
    (removed meanwhile): a ToolFailure that says so, not an AttributeError on None."""
    import io

    from ci import publish, pull
    from ci.config import load_config
    from ci.errors import ToolFailure
    from ci.images import parse_image_name
    from ci.registry import FailureKind

    config = load_config(env={"LOCAL_DOCKER_REGISTRY": "mirror.local:5000"})
    puller = pull.Puller(config, client=object(), env={}, out=io.StringIO(), err=io.StringIO())

    def no_digest(client, name):
        raise pull.PullFailure("registry unreachable", True, FailureKind.TRANSIENT)

    monkeypatch.setattr(pull, "registry_digest", no_digest)
    monkeypatch.setattr(publish, "local_image", lambda client, name: None)
    monkeypatch.setattr(puller, "pull_public", lambda *args: None)
    with pytest.raises(ToolFailure, match="no longer has it after the pull"):
        publish.mirror(puller, parse_image_name("rocm/sgl-dev:v0.5.9-rocm720-mi35x-20260101"))


def with_state_dir(config, path):
    """The config with the host's shared pull state (locks, slots, rates) under `path`."""
    import dataclasses

    return dataclasses.replace(config, pull=dataclasses.replace(
        config.pull, host=dataclasses.replace(config.pull.host, state_dir=str(path))))


def test_a_stalled_lan_pull_from_a_docker_hub_spelled_mirror_falls_back(monkeypatch, tmp_path):
    """A LAN registry spelled as Docker Hub (the image name then has no registry part): the stalled
    connections are released by the configured address, not by the name's None."""
    import io

    from ci import pull
    from ci.config import load_config
    from ci.images import parse_image_name
    from ci.registry import FailureKind

    config = with_state_dir(load_config(env={"LOCAL_DOCKER_REGISTRY": "index.docker.io"}), tmp_path)
    err = io.StringIO()
    puller = pull.Puller(config, client=object(), env={}, out=io.StringIO(), err=err)
    released = []

    def stalled(*args, **kwargs):
        raise pull.PullFailure("no progress for 60.0 s", True, FailureKind.STALLED)

    def release(registry, pid, timeout_s):
        released.append(registry)
        return f"released 0 stalled engine connection(s) to {registry.rsplit(':', 1)[0]}"

    def no_digest(client, name):
        raise pull.PullFailure("registry unreachable", True, FailureKind.TRANSIENT)

    monkeypatch.setattr(pull, "stream_pull", stalled)
    monkeypatch.setattr(pull, "fetch_image_size", lambda *args: ImageSize(1000, {}))  # the mirror is never asked
    monkeypatch.setattr(pull, "engine_pid", lambda client: None)
    monkeypatch.setattr(puller, "engine_id", lambda: "test-engine")
    monkeypatch.setattr(pull, "release_daemon_connections", release)
    monkeypatch.setattr(pull, "registry_digest", no_digest)
    monkeypatch.setattr(pull, "local_image", lambda client, name: None)
    monkeypatch.setattr(puller, "_room_check", lambda: None)
    image = parse_image_name("rocm/sgl-dev:v0.5.9-rocm720-mi35x-20260101")
    from_public = pull.PullOutcome(image, pull.PullSource.PUBLIC, "docker.io", None, 0, 0.0, 1)
    monkeypatch.setattr(puller, "pull_public", lambda *args: from_public)
    assert puller.pull(image).source is pull.PullSource.PUBLIC  # fell back
    assert released == ["index.docker.io"]
    assert "released 0 stalled engine connection(s) to index.docker.io" in err.getvalue()
