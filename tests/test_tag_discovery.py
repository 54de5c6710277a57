"""Discovery for real, with no Docker Engine: loopback `docker-registry`s (plain and htpasswd)
holding tags of several versions, previews and other arches, written through the registry's HTTP
API; a Docker-Hub-style front (Bearer token, pages) over a fixed list or a real registry; git
remotes on disk for the version of a build. Every request is counted."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
from pathlib import Path

import pytest
import requests

from ci.build import release_version
from ci.config import load_config
from ci.errors import ToolFailure, UserError
from ci.images import ImageName
from ci.pull import nightly_candidates
from ci.tags import AnswerKind, TagListError, _Client, api_base, fetch_tags, git_remote_tags
from tests.conftest import base_env, run_door
from tests.support.hubstub import HubStub
from tests.support.registry import free_port, push_tags, start_registry

pytestmark = [pytest.mark.registry, pytest.mark.timeout(120)]

REPO = "rocm/sgl-dev"
USER, CANARY = "ci-bot", "canary-51d2e-not-a-real-token"
TODAY = dt.date(2026, 4, 21)
TAGS = [
    "v0.5.9-rocm700-mi30x-20260421",
    "v0.5.10rc1-rocm700-mi30x-20260421",
    "v0.5.10-rocm700-mi30x-20260421",
    "v0.5.10-rocm700-mi30x-20260421-preview",
    "v0.5.11-rocm700-mi30x-20260421-preview",  # a newer version, but only as a preview
    "v0.5.10-rocm700-mi30x-20260420",
    "v0.5.9-rocm700-mi30x-20260419",
    "v0.5.11-rocm700-mi35x-20260421",
    "v0.5.11-rocm720-mi30x-20260421",
    "v0.5.11-rocm700-mi30x-20260410",
    "latest",
]
NEWEST_FIRST = ["v0.5.10-rocm700-mi30x-20260421", "v0.5.10rc1-rocm700-mi30x-20260421", "v0.5.9-rocm700-mi30x-20260421",
                "v0.5.10-rocm700-mi30x-20260420", "v0.5.9-rocm700-mi30x-20260419"]


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag-registries")
    plain = start_registry(root / "plain")
    locked = start_registry(root / "locked", user=USER, password=CANARY)
    try:
        push_tags(plain, REPO, TAGS)
        push_tags(locked, REPO, TAGS, USER, CANARY)
        yield plain, locked
    finally:
        plain.stop()
        locked.stop()


def counting() -> tuple[requests.Session, list[tuple[str, str, str | None]]]:
    """A session that records every request it sends: (method, URL, Authorization)."""
    session = requests.Session()
    sent: list[tuple[str, str, str | None]] = []
    session.hooks["response"].append(lambda r, *a, **k: sent.append((r.request.method, r.request.url,
                                                                     r.request.headers.get("Authorization"))))
    return session, sent


def discover(public: str, lan: str | None = None, session=None, arch: str = "mi300", rocm: str | None = None,
             override: Path | None = None, **env: str):
    environment = {"PUBLIC_DOCKER_REGISTRY": public, **env}
    if lan:
        environment["LOCAL_DOCKER_REGISTRY"] = lan
    if override:
        environment["SGL_CI_CONFIG_OVERRIDE"] = str(override)
    config = load_config(env=environment)
    out = io.StringIO()
    found = nightly_candidates(config, config.arches[arch], rocm, TODAY, environment, out, session)
    return found, out.getvalue()


def tags_of(candidates) -> list[str]:
    return [c.tag for c in candidates.images]


# --- real registries --------------------------------------------------------------------------------
def test_the_newest_candidate_from_a_real_registry_in_one_request(registries):
    plain, _ = registries
    session, sent = counting()
    found, out = discover(plain.address, session=session)
    assert tags_of(found) == NEWEST_FIRST
    assert found.listed_in == plain.address
    assert [(method, url) for method, url, _ in sent] == [("GET", f"http://{plain.address}/v2/{REPO}/tags/list?n=1000")]
    assert f"tag list of {plain.address}: {len(TAGS)} tag(s) in 1 request(s)" in out
    assert "5 match rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD> within 7 day(s)" in out


def test_other_arches_and_rocm_versions_from_the_same_list(registries):
    plain, _ = registries
    assert tags_of(discover(plain.address, arch="mi355")[0]) == ["v0.5.11-rocm700-mi35x-20260421"]
    assert tags_of(discover(plain.address, rocm="rocm720")[0]) == ["v0.5.11-rocm720-mi30x-20260421"]


def test_previews_when_config_says_so(registries, tmp_path):
    plain, _ = registries
    override = tmp_path / "previews.yaml"
    override.write_text("images: {use_preview: true}\n")
    assert tags_of(discover(plain.address, override=override)[0])[:3] == [
        "v0.5.11-rocm700-mi30x-20260421-preview",  # the newest version of the day exists only as a preview
        "v0.5.10-rocm700-mi30x-20260421", "v0.5.10-rocm700-mi30x-20260421-preview"]


def test_htpasswd_registry_with_the_login_costs_one_challenge(registries):
    _, locked = registries
    session, sent = counting()
    found, out = discover(locked.address, session=session, DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=CANARY)
    assert tags_of(found) == NEWEST_FIRST
    assert len(sent) == 2 and sent[0][2] is None and sent[1][2].startswith("Basic ")  # challenged, then answered
    assert CANARY not in out


def test_htpasswd_registry_without_or_with_a_wrong_login_says_so_without_the_secret(registries):
    _, locked = registries
    with pytest.raises(UserError) as caught:
        discover(locked.address)
    assert "the tag list needs a login (set DOCKERHUB_AMD_USERNAME and DOCKERHUB_AMD_TOKEN)" in str(caught.value)
    with pytest.raises(UserError) as caught:
        discover(locked.address, DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=CANARY + "-wrong")
    message = str(caught.value)
    assert f"{locked.address}: tag list: unauthorized" in message and CANARY not in message and "\n" not in message


def test_the_login_is_masked_in_actions_before_anything_is_printed(registries):
    _, locked = registries
    _, out = discover(locked.address, DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=CANARY, GITHUB_ACTIONS="true")
    assert out.splitlines()[0] == f"::add-mask::{CANARY}"
    assert CANARY not in "\n".join(out.splitlines()[1:])


def test_the_lan_mirror_lists_when_the_public_registry_is_unreachable(registries):
    plain, _ = registries
    session, sent = counting()
    found, out = discover(f"127.0.0.1:{free_port()}", lan=plain.address, session=session)
    assert tags_of(found) == NEWEST_FIRST and found.listed_in == plain.address
    assert len(sent) == 1  # the refused connection sent nothing; the mirror's list is one request
    assert f"tag list of {plain.address}: {len(TAGS)} tag(s) in 1 request(s)" in out


def test_the_login_is_offered_to_the_public_registry_only(registries):
    _, locked = registries
    session, sent = counting()
    with pytest.raises(UserError, match="needs a login"):  # the mirror is never sent the public login
        discover(f"127.0.0.1:{free_port()}", lan=locked.address, session=session,
                 DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=CANARY)
    assert all(auth is None for _, _, auth in sent)


def test_unreachable_registries_are_one_clear_error(registries):
    public, lan = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with pytest.raises(UserError) as caught:
        discover(public, lan=lan)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot find the nightly image: no tag list of {REPO} ({public}: connection refused; "
                              f"{lan}: connection refused) and no versions override in config (images.versions)")
    assert "--image or AMD_CI_IMAGE, or set images.versions" in message


def test_a_registry_that_hangs_costs_the_configured_timeout(tmp_path):
    import socket

    with socket.socket() as hung:  # accepts the connection (backlog), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(1)
        address = f"127.0.0.1:{hung.getsockname()[1]}"
        override = tmp_path / "fast.yaml"
        override.write_text("images: {discovery: {timeout_s: 0.5}}\n")
        with pytest.raises(UserError, match=f"{address}: no answer within 0.5 s"):
            discover(address, override=override)


def test_a_list_with_nothing_recent_names_the_newest_it_has(tmp_path):
    stale = start_registry(tmp_path / "stale")
    try:
        push_tags(stale, REPO, ["v0.5.9-rocm700-mi30x-20260301", "v0.5.8-rocm700-mi30x-20260228", "latest"])
        with pytest.raises(ToolFailure) as caught:
            discover(stale.address)
        assert str(caught.value) == (f"no nightly image: none of the 3 tag(s) of {REPO} in {stale.address} matches "
                                     "rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD> dated 2026-04-15 to 2026-04-21; "
                                     "the newest of any date is v0.5.9-rocm700-mi30x-20260301")
    finally:
        stale.stop()


def test_a_versions_override_needs_no_network(tmp_path):
    override = tmp_path / "pinned.yaml"
    override.write_text("images: {versions: [v0.5.10, v0.5.9]}\n")
    session, sent = counting()
    found, _ = discover(f"127.0.0.1:{free_port()}", session=session, override=override)
    assert sent == [] and found.listed_in is None and len(found.images) == 14
    assert found.images[:2] == (ImageName(REPO, "v0.5.10-rocm700-mi30x-20260421"), ImageName(REPO, "v0.5.9-rocm700-mi30x-20260421"))


def test_unreachable_public_registry_through_the_door_is_exit_2_and_one_line():
    # DOCKER_HOST points nowhere: had discovery not failed first, no Docker Engine would be asked.
    port = free_port()
    done = run_door("invoke", "pull-image", "--arch", "mi300",
                    env=base_env(PUBLIC_DOCKER_REGISTRY=f"127.0.0.1:{port}", DOCKER_HOST="unix:///nonexistent/docker.sock",
                                 DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=CANARY))
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert done.code == 2, done.err
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot find the nightly image: no tag list of {REPO} "
                                                   f"(127.0.0.1:{port}: connection refused)")
    assert "Traceback" not in done.err and CANARY not in done.out + done.err


# --- a Docker-Hub-style registry: Bearer tokens and pages -------------------------------------------------
@pytest.fixture
def hub():
    stub = HubStub(tags=lambda: list(TAGS), user=USER, password=CANARY).start()
    yield stub
    stub.stop()


def test_bearer_challenge_gets_an_anonymous_token(hub):
    session, sent = counting()
    found, _ = discover(hub.address, session=session)
    assert tags_of(found) == NEWEST_FIRST
    assert len(sent) == 3  # the page (challenged), the token, the page
    path, auth = hub.token_requests()[0]
    assert auth is None and "service=stub.registry" in path and "scope=repository%3Arocm%2Fsgl-dev%3Apull" in path
    assert hub.tag_list_requests()[1][1] == "Bearer anonymous-repository:rocm/sgl-dev:pull"


def test_bearer_token_with_the_login_and_the_login_only_to_the_realm(hub):
    found, _ = discover(hub.address, DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN=CANARY)
    assert tags_of(found) == NEWEST_FIRST
    assert hub.token_requests()[0][1].startswith("Basic ")
    assert [auth for _, auth in hub.tag_list_requests()] == [None, "Bearer user-ci-bot-repository:rocm/sgl-dev:pull"]


def test_a_refused_login_falls_back_to_an_anonymous_token(hub):
    found, _ = discover(hub.address, DOCKERHUB_AMD_USERNAME=USER, DOCKERHUB_AMD_TOKEN="wrong")
    assert tags_of(found) == NEWEST_FIRST
    assert [auth is None for _, auth in hub.token_requests()] == [False, True]


def test_pages_follow_the_link_header(hub, tmp_path):
    hub.max_page = 3  # the registry caps n, as Docker Hub does
    override = tmp_path / "pages.yaml"
    override.write_text("images: {discovery: {page_size: 4}}\n")
    session, sent = counting()
    found, out = discover(hub.address, session=session, override=override)
    assert tags_of(found) == NEWEST_FIRST
    pages = -(-len(TAGS) // 3)
    assert len(sent) == 2 + pages  # the challenge and the token, then one request per page
    assert f"{len(TAGS)} tag(s) in {2 + pages} request(s)" in out
    assert all(auth and auth.startswith("Bearer ") for _, auth in hub.tag_list_requests()[1:])


def test_pages_of_a_real_registry_behind_a_paging_front(registries, tmp_path):
    plain, _ = registries
    front = HubStub(tags=lambda: requests.get(f"http://{plain.address}/v2/{REPO}/tags/list", timeout=5).json()["tags"],
                    max_page=2).start()
    try:
        override = tmp_path / "pages.yaml"
        override.write_text("images: {discovery: {page_size: 2}}\n")
        found, _ = discover(front.address, override=override)
        assert tags_of(found) == NEWEST_FIRST
        assert len(front.tag_list_requests()) == 1 + -(-len(TAGS) // 2)
    finally:
        front.stop()


def test_a_link_chain_longer_than_max_pages_is_an_error(hub):
    hub.max_page = 1
    with pytest.raises(TagListError, match=r"goes on past 4 pages of 1 \(images.discovery.max_pages\)") as caught:
        fetch_tags(hub.address, REPO, timeout_s=5, page_size=1, max_pages=4)
    assert caught.value.kind is AnswerKind.BAD_ANSWER


@pytest.mark.parametrize("status, kind", [(503, AnswerKind.UNREACHABLE), (429, AnswerKind.UNREACHABLE),
                                          (404, AnswerKind.NOT_FOUND), (403, AnswerKind.UNAUTHORIZED)])
def test_registry_statuses(hub, status, kind):
    hub.status = status
    with pytest.raises(TagListError) as caught:
        fetch_tags(hub.address, REPO, timeout_s=5, page_size=10, max_pages=2)
    assert caught.value.kind is kind


def test_api_base():
    assert api_base("docker.io") == "https://registry-1.docker.io"
    assert api_base("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert api_base("localhost:5000") == "http://localhost:5000"
    assert api_base("[::1]:5000") == "http://[::1]:5000"
    assert api_base("10.44.14.109:5000") == "https://10.44.14.109:5000"  # plain HTTP only after TLS fails
    assert api_base("mirror.example") == "https://mirror.example"


def test_tls_failure_falls_back_to_plain_http_once(registries, monkeypatch):
    """A LAN mirror the daemon lists as insecure speaks plain HTTP on a non-loopback address;
    here a loopback registry is addressed over HTTPS to take the same path."""
    plain, _ = registries
    monkeypatch.setattr("ci.tags.api_base", lambda registry: f"https://{registry}")
    session, sent = counting()
    listed = fetch_tags(plain.address, REPO, timeout_s=5, page_size=1000, max_pages=2, session=session)
    assert sorted(listed.tags) == sorted(TAGS)
    assert listed.requests == 2 and [url for _, url, _ in sent] == [f"http://{plain.address}/v2/{REPO}/tags/list?n=1000"]


def test_no_password_over_plain_http_beyond_loopback():
    client = _Client(requests.Session(), "10.44.14.109:5000", REPO, 5, (USER, CANARY))
    with pytest.raises(TagListError, match="asks for a password over plain HTTP; not sent"):
        client._answer('Basic realm="mirror"', f"http://10.44.14.109:5000/v2/{REPO}/tags/list")
    assert client._answer('Basic realm="mirror"', f"https://10.44.14.109:5000/v2/{REPO}/tags/list").startswith("Basic ")


# --- the version of a build: the checkout's remote tags ----------------------------------------------
def git(*argv: str, cwd: Path) -> None:
    subprocess.run(["git", *argv], cwd=cwd, check=True, capture_output=True,
                   env={**base_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A checkout whose origin (a bare repository on disk) has release and other tags; the
    checkout itself has none, as after a shallow actions/checkout."""
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    seed = tmp_path / "seed"
    seed.mkdir()
    git("init", "-q", cwd=seed)
    git("commit", "-q", "--allow-empty", "-m", "x", cwd=seed)
    for name in ("v0.5.9", "v0.5.10rc1", "v0.5.10", "gateway-v9.9.9", "sgl-kernel-v0.4.0"):
        git("tag", name, cwd=seed)
    git("clone", "-q", "--bare", str(seed), str(origin), cwd=tmp_path)
    work.mkdir()
    git("init", "-q", cwd=work)
    git("remote", "add", "origin", str(origin), cwd=work)
    return work


def test_build_version_is_the_newest_release_tag_of_the_remote(checkout):
    assert "v0.5.10" in git_remote_tags(checkout, "origin", 10)
    version, source = release_version(load_config(env={}), checkout)
    assert (version, source) == ("v0.5.10", "the newest release tag of origin (git ls-remote)")


def test_build_version_from_the_override_needs_no_git(tmp_path):
    override = tmp_path / "pinned.yaml"
    override.write_text("images: {versions: [v0.5.11rc0]}\n")
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    assert release_version(config, tmp_path / "not-a-checkout") == ("v0.5.11rc0", "the versions override in config")


def test_build_version_without_a_reachable_remote_is_a_clear_error(tmp_path, checkout):
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=checkout)
    with pytest.raises(UserError) as caught:
        release_version(load_config(env={}), checkout)
    message = str(caught.value)
    assert message.startswith(f"cannot tell the SGLang version for the image name: git ls-remote --tags origin in {checkout}: ")
    assert message.endswith("no versions override in config (images.versions)") and "\n" not in message
