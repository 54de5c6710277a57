"""Tag lists from outside, without the Docker daemon and without a `git fetch`:

- a registry's `GET /v2/<repository>/tags/list` (Docker Registry HTTP API v2) in one request
  where the registry allows: `?n=` pages linked by the `Link` header, and one authentication
  challenge answered on the way (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`:
  an anonymous or credentialed token from the realm, as Docker Hub wants; `Basic`: the
  credentials, as an htpasswd registry wants);
- an image's download size, from its manifest (`fetch_image_size`);
- a git remote's tags (`git ls-remote --tags`, one round trip, nothing fetched).

Credentials go only where they are asked for, never over plain HTTP except to loopback, and
never into a message."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import requests

from ci.images import DOCKER_HUB
from ci.pullpace import ImageSize, manifest_size

HUB_API = "registry-1.docker.io"  # where docker.io's registry API answers
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


class AnswerKind(str, Enum):
    """Why a registry (or git) gave no usable answer; the value is the word messages show."""

    UNREACHABLE = "unreachable"  # connection, timeout, 429, 5xx: asking again may help
    NOT_FOUND = "not-found"
    UNAUTHORIZED = "unauthorized"
    BAD_ANSWER = "bad-answer"  # an answer, but not what the registry API gives

    def __str__(self) -> str:
        return self.value


class TagListError(Exception):
    """No tag list (or manifest, or remote tags), and why."""

    def __init__(self, message: str, kind: AnswerKind) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class TagList:
    registry: str
    tags: tuple[str, ...]
    requests: int  # HTTP requests sent: pages, plus the challenge's token (and a plain-HTTP retry)
    seconds: float


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(registry: str) -> str:
    """host of host:port, [v6]:port, or host."""
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def api_base(registry: str) -> str:
    """The registry API's base URL: HTTPS, except plain HTTP to loopback (as the daemon treats
    127.0.0.0/8 as insecure by default); docker.io answers at registry-1.docker.io."""
    address = HUB_API if registry in DOCKER_HUB else registry
    return f"{'http' if is_loopback(_host(address)) else 'https'}://{address}"


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


def _may_carry_secrets(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "https" or is_loopback(parts.hostname or "")


def _why(exc: requests.RequestException, timeout_s: float) -> str:
    text = str(exc).lower()
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "resolution" in text:
        return "name not resolved"
    if "unreachable" in text:
        return "network unreachable"
    return f"connection failed ({exc.__class__.__name__})"


@dataclass
class _Client:
    session: requests.Session
    registry: str
    repository: str
    timeout_s: float
    credentials: tuple[str, str] | None
    base: str = ""
    authorization: str | None = None
    challenged: bool = False
    sent: int = 0
    accept: str = "application/json"

    def __post_init__(self) -> None:
        self.base = api_base(self.registry)

    def _scrub(self, text: str) -> str:
        for secret in filter(None, [self.credentials[1] if self.credentials else None,
                                    (self.authorization or "").partition(" ")[2]]):
            text = text.replace(secret, "***")
        return text

    def _send(self, url: str, headers: dict[str, str], auth: tuple[str, str] | None = None,
              params: dict[str, str] | None = None) -> requests.Response:
        self.sent += 1
        try:
            return self.session.get(url, headers=headers, auth=auth, params=params, timeout=self.timeout_s)
        except requests.exceptions.SSLError:
            raise
        except requests.RequestException as exc:
            raise TagListError(f"{self.registry}: {_why(exc, self.timeout_s)}", AnswerKind.UNREACHABLE) from None

    def get(self, url: str) -> requests.Response:
        """One page, answering one authentication challenge on the way."""
        try:
            response = self._send(url, self._headers(url))
        except requests.exceptions.SSLError:
            # An HTTP-only registry (a LAN mirror the daemon lists as insecure): the daemon, too,
            # falls back to plain HTTP when TLS fails. No secret goes over it (_may_carry_secrets).
            url = "http://" + url.removeprefix("https://")
            self.base = "http://" + self.base.removeprefix("https://")
            try:
                response = self._send(url, self._headers(url))
            except requests.exceptions.SSLError:
                raise TagListError(f"{self.registry}: TLS handshake failed", AnswerKind.UNREACHABLE) from None
        if response.status_code == 401 and not self.challenged:
            self.challenged = True
            self.authorization = self._answer(response.headers.get("WWW-Authenticate", ""), url)
            response = self._send(url, self._headers(url))
        return self._checked(response)

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"Accept": self.accept}
        if self.authorization and _origin(url) == _origin(self.base) and _may_carry_secrets(url):
            headers["Authorization"] = self.authorization
        return headers

    def _answer(self, challenge: str, url: str) -> str:
        scheme, _, rest = challenge.strip().partition(" ")
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _PARAM.finditer(rest)}
        if scheme.lower() == "bearer" and params.get("realm"):
            return self._token(params)
        if scheme.lower() == "basic":
            if self.credentials is None:
                raise TagListError(f"{self.registry}: the tag list needs a login (set DOCKERHUB_AMD_USERNAME and "
                                   "DOCKERHUB_AMD_TOKEN)", AnswerKind.UNAUTHORIZED)
            if not _may_carry_secrets(url):
                raise TagListError(f"{self.registry}: asks for a password over plain HTTP; not sent", AnswerKind.UNAUTHORIZED)
            user, password = self.credentials
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        raise TagListError(f"{self.registry}: unsupported authentication challenge {scheme or '(none)'!r}", AnswerKind.UNAUTHORIZED)

    def _token(self, params: dict[str, str]) -> str:
        """A token from the challenge's realm: with our credentials when we have them (and the realm
        is HTTPS or loopback), anonymously when we have none or they are refused."""
        realm = params["realm"]
        query = {"service": params.get("service", ""), "scope": params.get("scope") or f"repository:{self.repository}:pull"}
        query = {k: v for k, v in query.items() if v}
        use = self.credentials if self.credentials and _may_carry_secrets(realm) else None
        try:
            response = self._send(realm, {"Accept": "application/json"}, auth=use, params=query)
            if response.status_code in (401, 403) and use is not None:
                response = self._send(realm, {"Accept": "application/json"}, params=query)
        except requests.exceptions.SSLError:
            raise TagListError(f"{self.registry}: the token service {_origin(realm)[1]}: TLS handshake failed",
                               AnswerKind.UNREACHABLE) from None
        if response.status_code != 200:
            raise TagListError(f"{self.registry}: the token service {_origin(realm)[1]} answered HTTP "
                               f"{response.status_code}", _kind(response.status_code))
        try:
            data = response.json()
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise TagListError(f"{self.registry}: the token service {_origin(realm)[1]} sent no token", AnswerKind.BAD_ANSWER)
        return f"Bearer {token}"

    def _checked(self, response: requests.Response) -> requests.Response:
        if response.status_code == 200:
            return response
        what = {401: "unauthorized", 403: "denied", 404: f"no repository {self.repository}",
                429: "rate limited (HTTP 429)"}.get(response.status_code, f"HTTP {response.status_code}")
        raise TagListError(self._scrub(f"{self.registry}: tag list: {what}"), _kind(response.status_code))


def _kind(status: int) -> AnswerKind:
    if status in (401, 403):
        return AnswerKind.UNAUTHORIZED
    if status == 404:
        return AnswerKind.NOT_FOUND
    if status == 429 or status >= 500:
        return AnswerKind.UNREACHABLE
    return AnswerKind.BAD_ANSWER


def fetch_tags(registry: str, repository: str, timeout_s: float, page_size: int, max_pages: int,
               credentials: tuple[str, str] | None = None, session: requests.Session | None = None) -> TagList:
    """Every tag of `repository` on `registry`: one request per page (n=`page_size`), plus a token
    when challenged. `credentials` (user, token) are offered only when the registry asks."""
    started = time.monotonic()
    own = session is None
    client = _Client(session or requests.Session(), registry, repository, timeout_s, credentials)
    url = f"{client.base}/v2/{repository}/tags/list?n={page_size}"
    tags: list[str] = []
    try:
        for _ in range(max_pages):
            response = client.get(url)
            try:
                data = response.json()
                page = data.get("tags") or []
            except (ValueError, AttributeError):
                raise TagListError(f"{registry}: the tag list is not JSON of the registry API", AnswerKind.BAD_ANSWER) from None
            if not isinstance(page, list):
                raise TagListError(f"{registry}: the tag list's 'tags' is not a list", AnswerKind.BAD_ANSWER)
            tags += [tag for tag in page if isinstance(tag, str)]
            following = response.links.get("next", {}).get("url")
            if not following:
                return TagList(registry, tuple(tags), client.sent, time.monotonic() - started)
            url = urllib.parse.urljoin(response.url, following)
    finally:
        if own:
            client.session.close()
    raise TagListError(f"{registry}: the tag list goes on past {max_pages} pages of {page_size} "
                       "(images.discovery.max_pages)", AnswerKind.BAD_ANSWER)


MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])


def fetch_image_size(registry: str, repository: str, reference: str, timeout_s: float,
                     credentials: tuple[str, str] | None = None) -> ImageSize:
    """The download size of repository:reference (config plus layers, linux/amd64 for an index)
    and of each layer, from the registry's manifests, before any layer is fetched: one or two requests."""
    client = _Client(requests.Session(), registry, repository, timeout_s, credentials, accept=MANIFEST_TYPES)
    try:
        for _ in range(2):  # an index, then its platform's manifest
            response = client.get(f"{client.base}/v2/{repository}/manifests/{reference}")
            try:
                found = manifest_size(response.json())
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise TagListError(f"{registry}: the manifest of {repository}:{reference} cannot be read: {exc}",
                                   AnswerKind.BAD_ANSWER) from None
            if isinstance(found, ImageSize):
                return found
            reference = found
    finally:
        client.session.close()
    raise TagListError(f"{registry}: {repository}:{reference}: an index inside an index", AnswerKind.BAD_ANSWER)


# --- git ------------------------------------------------------------------------------------------
_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+@")


def git_remote_tags(workspace: Path, remote: str, timeout_s: float) -> tuple[str, ...]:
    """The tag names of a git remote of the checkout at `workspace`: one `git ls-remote`, no fetch."""
    argv = ["git", "-C", str(workspace), "ls-remote", "--tags", "--refs", remote]
    what = f"git ls-remote --tags {remote} in {workspace}"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise TagListError(f"{what}: git not found", AnswerKind.UNREACHABLE) from None
    except subprocess.TimeoutExpired:
        raise TagListError(f"{what}: no answer within {timeout_s:g} s", AnswerKind.UNREACHABLE) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        last = _CREDENTIALS_IN_URL.sub("://***@", lines[-1].strip()) if lines else f"exit code {done.returncode}"
        raise TagListError(f"{what}: {last}", AnswerKind.UNREACHABLE)
    return tuple(line.split("\t", 1)[1].removeprefix("refs/tags/") for line in done.stdout.splitlines() if "\t" in line)
