"""Docker daemon adapter for images: the client, local lookups, registry digests through the
daemon's distribution endpoint, tags, and the classification (and retry) of registry errors."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import docker
import docker.auth
import docker.errors
import requests
import tenacity

from ci.config import RetryPolicy
from ci.errors import ToolFailure
from ci.images import DOCKER_HUB, ImageName

# The daemon's error texts for failures a retry cannot fix...
_FATAL = re.compile(
    r"manifest unknown|not found|name unknown|repository does not exist|pull access denied|"
    r"unauthorized|authentication required|denied|no basic auth credentials|incorrect username or password|"
    r"invalid reference format",
    re.IGNORECASE,
)
# ...and for those that can pass on a retry: rate limits, 5xx, connection trouble, timeouts.
_TRANSIENT = re.compile(
    r"toomanyrequests|too many requests|\b429\b|unexpected HTTP status: 5\d\d|\b50[0234]\b|unavailable|"
    r"timeout|timed out|deadline exceeded|connection refused|connection reset|broken pipe|\bEOF\b|"
    r"no route to host|network is unreachable|temporary failure|TLS handshake|i/o timeout|no progress|slower than",
    re.IGNORECASE,
)


class FailureKind(str, Enum):
    """Why a registry operation failed; the value is the word logs and summaries show."""

    NOT_FOUND = "not-found"
    UNAUTHORIZED = "unauthorized"
    TRANSIENT = "transient"
    STALLED = "stalled"
    OVER_BUDGET = "over-budget"  # bytes came, too slowly for the budget, and public would be faster
    DISK = "disk"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class PullFailure(Exception):
    """A pull that did not succeed; `retryable` says whether trying again can help."""

    def __init__(self, message: str, retryable: bool, kind: FailureKind) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.kind = kind


def classify(message: str) -> PullFailure:
    """Fatal first: a 404 or 401 must never be retried for 12 minutes as the old script did."""
    text = " ".join(message.split())
    if _FATAL.search(text):
        denied = re.search(r"unauthori|authentication|denied|credentials|password", text, re.I)
        return PullFailure(text, False, FailureKind.UNAUTHORIZED if denied else FailureKind.NOT_FOUND)
    if _TRANSIENT.search(text):
        return PullFailure(text, True, FailureKind.TRANSIENT)
    return PullFailure(text, False, FailureKind.UNKNOWN)


def retrying(policy: RetryPolicy, what: str, say: Callable[[str], None], sleep: Callable[[float], None]) -> tenacity.Retrying:
    """The policy's exponential backoff with jitter, retrying only a PullFailure that can pass on
    a retry, and saying each retry (what failed, when the next attempt comes) before sleeping."""
    def before_sleep(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        say(f"{what}: attempt {state.attempt_number}/{policy.attempts} failed ({failure}); retrying in {wait:.1f} s")

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s)
        + tenacity.wait_random(0, policy.jitter_s),
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, PullFailure) and e.retryable),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )


def connect(timeout_s: float) -> docker.DockerClient:
    """A client for the local engine; its timeout bounds every call except pulls (ours to bound)."""
    try:
        client = docker.from_env(timeout=int(max(1, timeout_s)))
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise ToolFailure(f"cannot reach the Docker Engine: {exc}") from None
    except requests.RequestException as exc:
        raise ToolFailure(f"cannot reach the Docker Engine: {exc}") from None


def auth_header(client: docker.DockerClient, registry: str | None) -> str | None:
    """The X-Registry-Auth header for a registry we logged in to (the SDK keeps it in memory)."""
    return docker.auth.get_config_header(client.api, None if registry in (None, *DOCKER_HUB) else registry)


@dataclass(frozen=True)
class LocalImage:
    id: str
    repo_digests: tuple[str, ...]
    size: int

    def digest_for(self, repository: str) -> str | None:
        for entry in self.repo_digests:
            repo, _, digest = entry.partition("@")
            if repo == repository or repo.removeprefix("docker.io/") == repository:
                return digest
        return None

    @property
    def any_digest(self) -> str | None:
        return self.repo_digests[0].partition("@")[2] if self.repo_digests else None

    def has_digest(self, digest: str) -> bool:
        return any(entry.endswith("@" + digest) for entry in self.repo_digests)


def local_image(client: docker.DockerClient, name: ImageName | str) -> LocalImage | None:
    try:
        attrs: dict[str, Any] = client.api.inspect_image(str(name))
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        if exc.status_code == 404:
            return None
        raise ToolFailure(f"cannot inspect {name}: {exc.explanation}") from None
    return LocalImage(attrs["Id"], tuple(attrs.get("RepoDigests") or ()), int(attrs.get("Size") or 0))


def registry_digest(client: docker.DockerClient, name: ImageName) -> str:
    """The tag's manifest digest, asked through the daemon (the SDK's `docker manifest inspect`).

    Raises PullFailure: not-found when the tag is missing, transient when the registry is unreachable."""
    try:
        data = client.api.inspect_distribution(str(name))  # the SDK adds our login's auth header
    except docker.errors.APIError as exc:
        raise classify(str(exc.explanation or exc)) from None
    except requests.RequestException as exc:
        raise PullFailure(f"no answer from the daemon asking {name.registry or 'docker.io'}: {exc.__class__.__name__}", True, FailureKind.TRANSIENT) from None
    return data["Descriptor"]["digest"]


def tag(client: docker.DockerClient, source: ImageName, target: ImageName) -> None:
    if not client.api.tag(str(source), target.pull_repository, target.tag):
        raise ToolFailure(f"could not tag {source} as {target}")


def untag(client: docker.DockerClient, name: ImageName) -> None:
    """Remove one name of an image (its layers stay: other names may share them)."""
    try:
        client.api.remove_image(str(name), noprune=True)
    except docker.errors.APIError:
        pass


def engine_pid(client: docker.DockerClient) -> int | None:
    """The engine's process id, from its Unix socket's peer credentials (SO_PEERCRED); None for
    an engine over TCP or SSH, whose connections are not ours to see."""
    path = getattr(getattr(client.api, "_custom_adapter", None), "socket_path", None)
    if not isinstance(path, str):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    return pid or None


_SOCKET_LINE = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+)\s+(\S+)\s+.*\bpid=(\d+),")


def engine_sockets(ss_lines: str, pid: int) -> list[tuple[str, str]]:
    """(local, peer) of the `ss -tnpH` lines owned by process `pid`."""
    found = []
    for line in ss_lines.splitlines():
        match = _SOCKET_LINE.match(line.strip())
        if match and int(match.group(3)) == pid:
            found.append((match.group(1), match.group(2)))
    return found


def release_daemon_connections(registry: str, pid: int | None, timeout_s: float) -> str:
    """Close the engine's TCP connections to a registry that stalled mid-layer.

    Closing our request cancels the pull, but the daemon's blob read on a stalled connection
    cannot be cancelled, and every later pull of the same layer digest (from any registry) waits
    for that transfer to end: the fallback would hang too. `ss -K` (iproute2, needs
    CAP_NET_ADMIN) destroys those sockets; the daemon's own transfer then fails and is dropped.
    With the engine's `pid` known only that engine's sockets go: other engines and jobs on this
    host pulling from the same mirror keep theirs. Without it (an engine over TCP) every socket
    of the host to the mirror goes, and those pulls are retried by their daemons. Returns a line
    saying what was done."""
    host, _, port = registry.rpartition(":") if registry.rsplit(":", 1)[-1].isdigit() else (registry, "", "")
    host = host.strip("[]")
    ports = [port] if port else ["443", "80"]
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
                            if isinstance(info[4][0], str)})  # TCP gives IPv4/IPv6 addresses: strings
    except OSError as exc:
        return f"could not resolve {host} to release stalled connections: {exc.strerror}"
    ss = shutil.which("ss")
    if ss is None:
        return "ss (iproute2) not found: the engine may keep a stalled connection to the mirror"
    killed = 0
    for address in addresses:
        for each_port in ports:
            if pid is None:
                filters = [["dst", address, "dport", "=", each_port]]
            else:
                listed = subprocess.run([ss, "-tnpH", "dst", address, "dport", "=", each_port],
                                        capture_output=True, text=True, timeout=timeout_s, check=False)
                filters = [["src", local, "dst", peer] for local, peer in engine_sockets(listed.stdout, pid)]
            for each in filters:
                done = subprocess.run([ss, "-K", "-tnH", *each], capture_output=True, text=True, timeout=timeout_s, check=False)
                if done.returncode != 0:
                    return f"ss -K failed ({done.stderr.strip() or done.returncode}): the engine may keep a stalled connection"
                killed += len([line for line in done.stdout.splitlines() if line.strip()])
    whose = f"engine (pid {pid})" if pid else "host's (engine pid unknown)"
    return f"released {killed} stalled {whose} connection(s) to {registry}"
