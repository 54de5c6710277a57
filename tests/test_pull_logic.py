"""The pull's pure parts: the watchdog, the layer tally, and error classification (messages as
the real daemon printed them against real registries and the fault proxy)."""

from __future__ import annotations

import pytest

from ci.pull import LayerTally, Watchdog
from ci.registry import classify


def test_watchdog_fires_when_nothing_arrives():
    dog = Watchdog(idle_s=5, floor_bytes_per_s=None, window_s=10, started=100.0)
    assert dog.verdict(104.9) is None
    assert "no progress for 5.0 s" in dog.verdict(105.0)


def test_progress_resets_the_idle_deadline_but_repeated_totals_do_not():
    dog = Watchdog(idle_s=5, floor_bytes_per_s=None, window_s=10, started=0.0)
    dog.observe(4.0, 1000)
    assert dog.verdict(8.0) is None
    dog.observe(8.5, 1000)  # an event with no new bytes ("Waiting", "Retrying in 3 seconds")
    assert dog.verdict(9.0) is not None


def test_floor_needs_a_whole_window_then_judges_the_rate():
    dog = Watchdog(idle_s=100, floor_bytes_per_s=1000, window_s=10, started=0.0)
    for t in range(1, 10):
        dog.observe(float(t), t * 500)  # 500 B/s: under the floor...
        assert dog.verdict(float(t)) is None  # ...but no whole window yet
    dog.observe(10.0, 5000)
    assert "slower than the floor" in dog.verdict(10.0)


def test_floor_passes_a_fast_transfer_and_uses_only_the_last_window():
    dog = Watchdog(idle_s=100, floor_bytes_per_s=1000, window_s=10, started=0.0)
    for t in range(1, 31):
        dog.observe(float(t), 2000 * t if t <= 20 else 40000 + 100 * (t - 20))
        if t <= 20:
            assert dog.verdict(float(t)) is None
    assert "slower than the floor" in dog.verdict(30.0)  # fast early bytes do not hide a crawl now


def test_tally_sums_layers_and_phases():
    tally = LayerTally()
    tally.add({"status": "Downloading", "id": "a", "progressDetail": {"current": 100, "total": 1000}})
    tally.add({"status": "Downloading", "id": "b", "progressDetail": {"current": 50, "total": 500}})
    tally.add({"status": "Downloading", "id": "a", "progressDetail": {"current": 400, "total": 1000}})
    tally.add({"status": "Extracting", "id": "a", "progressDetail": {"current": 200, "total": 1000}})
    tally.add({"status": "Pulling fs layer", "id": "c", "progressDetail": {}})
    assert tally.done == 400 + 50 + 200
    assert tally.download_total == 1500


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


def test_a_stalled_lan_pull_from_a_docker_hub_spelled_mirror_falls_back(monkeypatch):
    """A LAN registry spelled as Docker Hub (the image name then has no registry part): the stalled
    connections are released by the configured address, not by the name's None."""
    import io

    from ci import pull
    from ci.config import load_config
    from ci.images import parse_image_name
    from ci.registry import FailureKind

    config = load_config(env={"LOCAL_DOCKER_REGISTRY": "index.docker.io"})
    err = io.StringIO()
    puller = pull.Puller(config, client=object(), env={}, out=io.StringIO(), err=err)
    released = []

    def stalled(*args, **kwargs):
        raise pull.PullFailure("no progress for 60.0 s", True, FailureKind.STALLED)

    def release(registry):
        released.append(registry)
        return f"released 0 stalled engine connection(s) to {registry.rsplit(':', 1)[0]}"

    def no_digest(client, name):
        raise pull.PullFailure("registry unreachable", True, FailureKind.TRANSIENT)

    monkeypatch.setattr(pull, "stream_pull", stalled)
    monkeypatch.setattr(pull, "release_daemon_connections", release)
    monkeypatch.setattr(pull, "registry_digest", no_digest)
    monkeypatch.setattr(pull, "local_image", lambda client, name: None)
    monkeypatch.setattr(puller, "_room_check", lambda: None)
    monkeypatch.setattr(puller, "pull_public", lambda *args: "public")
    assert puller.pull(parse_image_name("rocm/sgl-dev:v0.5.9-rocm720-mi35x-20260101")) == "public"  # fell back
    assert released == ["index.docker.io"]
    assert "released 0 stalled engine connection(s) to index.docker.io" in err.getvalue()
