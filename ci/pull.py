"""Resolve the newest nightly image and pull it LAN-first: the mirror bounded by a no-progress
deadline and a throughput floor, the public registry retried with tenacity only where a retry
can help, and one summary line at the end. Candidates come from the registry's tag list unless
config names versions. Login lives in ci.login, push and mirror in ci.publish."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TextIO

import docker
import requests

from ci import github
from ci.config import ArchSpec, Config
from ci.errors import ToolFailure, UserError
from ci.hostpull import PublicSlot, PublicSlots, image_lock, read_rates, record_rate
from ci.images import (
    IMAGE_ENV,
    ImageName,
    candidate_images,
    check_rocm,
    discovered_candidates,
    matching_tags,
    parse_image_name,
    tag_shape,
)
from ci.login import log_in_public, public_credentials, scrub_token
from ci.progress import BarProgress, PlainProgress, human_bytes, progress_for
from ci.pullpace import Budget, ImageSize, Leave, Verdict, Watchdog, public_estimate
from ci.registry import (
    FailureKind,
    PullFailure,
    auth_header,
    classify,
    engine_pid,
    local_image,
    registry_digest,
    release_daemon_connections,
    retrying,
    tag,
    untag,
)
from ci.tags import AnswerKind, TagListError, fetch_image_size, fetch_tags


# --- the daemon's progress (pure) -------------------------------------------------------------
@dataclass
class LayerTally:
    """Bytes done across layers, from the daemon's progress events."""

    current: dict[tuple[str, str], int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    fetched: set[str] = field(default_factory=set)  # layers whose download is complete
    present: set[str] = field(default_factory=set)  # layers the engine already had: nothing to download

    def add(self, event: Mapping) -> None:
        detail = event.get("progressDetail") or {}
        layer, status = event.get("id", ""), event.get("status", "")
        if "current" in detail:
            self.current[(layer, status.split(" ")[0])] = int(detail["current"])
        if detail.get("total") and status.startswith("Downloading"):
            self.totals[layer] = int(detail["total"])
        if status.startswith(("Verifying", "Download complete", "Extracting", "Pull complete")):
            self.fetched.add(layer)
        if status.startswith("Already exists"):
            self.present.add(layer)

    @property
    def done(self) -> int:
        """Any progress: download and extraction bytes together (the no-progress deadline's measure)."""
        return sum(self.current.values())

    @property
    def downloaded(self) -> int:
        """Bytes of the download alone (the rate's measure): a finished layer counts in full."""
        return sum(self.totals.get(layer, current) if layer in self.fetched else current
                   for (layer, phase), current in self.current.items() if phase == "Downloading")

    @property
    def download_total(self) -> int:
        return sum(self.totals.values())


# --- one streamed pull through the daemon ---------------------------------------------------
def stream_pull(
    client: docker.DockerClient,
    name: ImageName,
    idle_s: float,
    window_s: float,
    on_progress: Callable[[int, int | None], None] = lambda done, total: None,
    *,
    connect_timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    room_check: Callable[[int], str | None] = lambda remaining: None,
    budget: Budget | None = None,
    may_leave: Callable[[Verdict], bool] = lambda verdict: True,
) -> int:
    """Pull `name` through the daemon, aborting per the watchdog; the bytes downloaded.

    An over-budget verdict leaves only when `may_leave` agrees (a public-pull slot is free);
    otherwise the pull goes on and the verdict is asked again at the next event.

    The SDK's `pull` sends its request with no timeout at all, so this posts to the same endpoint
    through the SDK's own session with a read timeout equal to the no-progress deadline. Closing
    the response on abort makes the daemon cancel the pull, so nothing goes on downloading."""
    api = client.api
    url = f"{api.base_url}/v{api.api_version}/images/create"
    headers = {}
    header = auth_header(client, name.registry)
    if header:
        headers["X-Registry-Auth"] = header
    watchdog = Watchdog(idle_s, window_s, clock(), budget)
    tally = LayerTally()
    response = None
    try:
        response = api.post(url, params={"fromImage": name.pull_repository, "tag": name.tag}, headers=headers,
                            stream=True, timeout=(connect_timeout_s, idle_s))
        if response.status_code != 200:
            raise classify(_daemon_message(response))
        for line in response.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event.get("error") or event.get("errorDetail"):  # errors arrive inside an HTTP 200 stream
                raise classify(event.get("error") or event["errorDetail"].get("message", "pull failed"))
            tally.add(event)
            now = clock()
            watchdog.observe(now, tally.done, tally.downloaded, tally.download_total or None, tally.present)
            on_progress(tally.done, tally.download_total or None)
            verdict = watchdog.verdict(now)
            if verdict and (verdict.leave is Leave.STALLED or may_leave(verdict)):
                kind = FailureKind.STALLED if verdict.leave is Leave.STALLED else FailureKind.OVER_BUDGET
                raise PullFailure(f"{name}: {verdict.reason}", True, kind)
            if tally.download_total:
                full = room_check(max(tally.download_total - tally.done, 0))
                if full:
                    raise PullFailure(f"{name}: {full}", False, FailureKind.DISK)
        return tally.downloaded
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
        if isinstance(exc, requests.exceptions.ConnectionError) and "timed out" not in str(exc).lower() \
                and "Read timed out" not in str(exc):
            raise PullFailure(f"{name}: lost the connection to the daemon: {exc.__class__.__name__}", True, FailureKind.TRANSIENT) from None
        raise PullFailure(f"{name}: no progress for {idle_s:g} s (deadline {idle_s:g} s)", True, FailureKind.STALLED) from None
    finally:
        if response is not None:
            response.close()


def _daemon_message(response: requests.Response) -> str:
    try:
        return response.json().get("message") or response.text
    except ValueError:
        return response.text or f"HTTP {response.status_code}"


# --- the whole pull ----------------------------------------------------------------------------
class PullSource(str, Enum):
    """Where the image came from; the value is the summary line's word."""

    LAN = "lan"
    PUBLIC = "public"
    LOCAL = "local"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PullOutcome:
    image: ImageName
    source: PullSource
    registry: str | None
    digest: str | None
    size_bytes: int
    seconds: float
    attempts: int
    waited_s: float = 0.0  # of `seconds`: waiting for another job's pull of this image into this engine

    def summary(self) -> str:
        where = f" ({self.registry})" if self.registry else ""
        return (f"image {self.image}: source={self.source}{where} digest={self.digest or 'unknown'} "
                f"size={human_bytes(self.size_bytes)} seconds={self.seconds:.1f} attempts={self.attempts} "
                f"waited_for_another_pull={self.waited_s:.1f}")


@dataclass
class Puller:
    config: Config
    client: docker.DockerClient
    env: Mapping[str, str] = field(repr=False)  # the process environment: holds the login token
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)  # the hold's jitter; tests seed it
    _login_tried: bool | None = None
    _slot: PublicSlot | None = None  # a public-pull slot taken when the mirror was left over budget

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def login_public(self) -> bool:
        """Once per Puller (see ci.login): resolution, pull and push all need it, and each may come first."""
        if self._login_tried is None:
            self._login_tried = log_in_public(self.config, self.client, self.env, self.say, self.out, self.err, self.sleep)
        return self._login_tried

    # Resolution -----------------------------------------------------------------------------
    def resolve(self, candidates: Iterable[ImageName], listed_in: str | None = None) -> ImageName:
        """The newest candidate that exists: a local image first, then the registry via the daemon.

        Candidates from a registry's tag list (`listed_in`) exist there: the newest is taken, and
        the daemon is asked only whether it is already here."""
        if listed_in is not None:
            candidates = tuple(candidates)
            if not candidates:
                raise ToolFailure(f"no nightly image listed in {listed_in}")
            here = local_image(self.client, candidates[0]) is not None
            self.say(f"resolved {candidates[0]} ({'present locally; ' if here else ''}newest in {listed_in}'s tag list)")
            return candidates[0]
        self.login_public()
        registries = [self.config.images.registries.public]
        if self.config.images.registries.lan:
            registries.append(self.config.images.registries.lan)
        tried: list[str] = []
        unreachable: dict[str, str] = {}
        for candidate in candidates:
            if local_image(self.client, candidate) is not None:
                self.say(f"resolved {candidate} (present locally)")
                return candidate
            tried.append(f"{candidate} (local: absent")
            for registry in registries:
                if registry in unreachable:
                    continue
                try:
                    registry_digest(self.client, candidate.on(registry))
                    self.say(f"resolved {candidate} (found in {registry})")
                    return candidate
                except PullFailure as failure:
                    if failure.retryable:  # unreachable: stop asking it, try the next registry
                        unreachable[registry] = failure.message
                    tried[-1] += f"; {registry}: {'unreachable' if failure.retryable else failure.kind}"
            tried[-1] += ")"
        notes = "".join(f"; {r} unreachable: {m}" for r, m in unreachable.items())
        raise ToolFailure(f"no nightly image found; tried {', '.join(tried)}{notes}")

    # Pull -------------------------------------------------------------------------------------
    def pull(self, image: ImageName) -> PullOutcome:
        """The image, from here, the LAN mirror or the public registry; one job of the host at a
        time pulls it into this engine, the others wait and then find it here."""
        image = image.plain
        return self.one_at_a_time(str(image), lambda started: self._pull_unlocked(image, started))

    def one_at_a_time(self, image: str, pull: Callable[[float], PullOutcome]) -> PullOutcome:
        """`pull(started)` under the host-wide lock for this engine and image; the outcome says
        how long this job waited for another's pull."""
        started = time.monotonic()
        with image_lock(self.state_dir, self.engine_id(), image, self.say) as waited:
            outcome = pull(started)
        return dataclasses.replace(outcome, waited_s=waited)

    def _pull_unlocked(self, image: ImageName, started: float) -> PullOutcome:
        registries = self.config.images.registries
        public = image.on(registries.public)
        self.login_public()
        present = local_image(self.client, image)
        # The public digest is needed up front only to judge a local copy; otherwise it is asked
        # for while the LAN pull runs, and waited for only to check the LAN image's integrity.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            public_digest_future = pool.submit(self.public_digest, public)
            if present:
                public_digest = public_digest_future.result()
                if public_digest is None or present.has_digest(public_digest):
                    digest = public_digest or present.any_digest
                    self.say(f"{image} is already present locally" + (" at the registry's digest" if public_digest else ""))
                    return PullOutcome(image, PullSource.LOCAL, None, digest, present.size, time.monotonic() - started, 0)
            if registries.lan:
                outcome = self._pull_lan(image, registries.lan, public_digest_future.result, started)
                if outcome:
                    return outcome
            return self.pull_public(image, public, public_digest_future.result(), started)

    def public_digest(self, name: ImageName) -> str | None:
        """The registry's digest for `name`, or None when it cannot be asked (checks then rely on the pull)."""
        try:
            return registry_digest(self.client, name)
        except PullFailure:
            return None

    def _progress(self, name: ImageName) -> PlainProgress | BarProgress:
        return progress_for(f"pull {name}", self.config.pull.progress_log_interval_s, self.out)

    @property
    def state_dir(self) -> Path:
        return Path(self.config.pull.host.state_dir)

    def engine_id(self) -> str:
        """The engine's identity for the host-wide pull lock: its ID and data root (engines of one
        host share the ID, from /etc/docker/key.json, but never a data root)."""
        info = self.client.info()
        return f"{info.get('ID') or self.client.api.base_url} {info.get('DockerRootDir', '')}"

    def public_slots(self) -> PublicSlots:
        host = self.config.pull.host
        return PublicSlots(self.state_dir, host.public_slots, host.slot_poll_s)

    def lan_budget(self, lan: ImageName) -> Budget:
        """The predicted-time rule for this attempt: the image's size from the mirror's manifest,
        the public estimate, and this job's hold with its own jitter. The manifest is asked
        within the no-progress deadline: a mirror that cannot answer it by then is left (a
        PullFailure) before the daemon is involved; one that answers otherwise (no manifest,
        denied, not JSON) is pulled anyway, judged on the daemon's layer totals."""
        policy = self.config.pull.lan
        try:
            size: ImageSize | None = fetch_image_size(lan.registry or "docker.io", lan.repository, lan.tag,
                                                      policy.first_progress_s)
        except TagListError as failure:
            if failure.kind is AnswerKind.UNREACHABLE:
                raise PullFailure(f"{lan}: no progress for {policy.first_progress_s:g} s (deadline) asking for the "
                                  f"manifest: {failure.message}", True, FailureKind.TRANSIENT) from None
            self.say(f"size of {lan} unknown before the download ({failure.message}); judged on the daemon's totals")
            size = None
        public = self.config.images.registries.public
        estimate = public_estimate(read_rates(self.state_dir).get(public, []), policy.public_bytes_per_s)
        return Budget(policy.budget_s, size.total if size else None, estimate, policy.faster_by,
                      policy.hold_s + self.rng.uniform(0, policy.jitter_s), size.layers if size else {})

    def _may_leave(self, verdict: Verdict) -> bool:
        """Leave an over-budget mirror only with a public-pull slot of this host in hand (kept
        for the public pull); without one the job stays on the mirror, which still delivers."""
        if self._slot is None:
            self._slot = self.public_slots().try_take()
        return self._slot is not None

    def lan_attempt(self, lan: ImageName) -> bool:
        """One pull from the LAN mirror under its watchdog; False (said on stderr, the engine's
        stalled connections released) when the mirror failed or stopped helping."""
        policy = self.config.pull.lan
        progress = self._progress(lan)
        started = time.monotonic()
        try:
            budget = self.lan_budget(lan)
            with github.group(f"pull {lan} (LAN mirror)", self.env, self.out):
                downloaded = stream_pull(self.client, lan, policy.first_progress_s, policy.window_s, progress.update,
                                         room_check=self._room_check(), connect_timeout_s=self.config.pull.connect_timeout_s,
                                         budget=budget, may_leave=self._may_leave)
            self._record_rate(self.config.images.registries.lan or "", downloaded, time.monotonic() - started)
            return True
        except PullFailure as failure:
            registry = self.config.images.registries.lan or ""  # by address: a Docker Hub-spelled mirror has no name part
            # Only a stalled engine needs its connections cut (see release_daemon_connections);
            # an over-budget pull still moves, and closing our request ends it.
            note = None
            if failure.kind is FailureKind.STALLED:
                note = release_daemon_connections(registry, engine_pid(self.client), self.config.pull.release_timeout_s)
            self.report_lan_failure(lan, failure.message + (f"\n{note}" if note else ""))
            return False
        finally:
            progress.close()

    def _record_rate(self, registry: str, downloaded: int, seconds: float) -> None:
        if registry and downloaded > 0 and seconds > 0:
            record_rate(self.state_dir, registry, downloaded / seconds, self.config.pull.host.rates_kept)

    def _pull_lan(self, image: ImageName, lan_registry: str, public_digest_of: Callable[[], str | None],
                  started: float) -> PullOutcome | None:
        lan = image.on(lan_registry)
        if not self.lan_attempt(lan):
            return None
        pulled = local_image(self.client, lan)
        lan_digest = pulled.digest_for(lan.pull_repository) if pulled else None
        public_digest = public_digest_of()
        if public_digest and lan_digest != public_digest:
            self.report_lan_failure(lan, f"digest mismatch: LAN has {lan_digest}, public has {public_digest}; using the public image")
            untag(self.client, lan)
            return None
        tag(self.client, lan, image)  # the LAN name stays: its RepoDigest records where the bytes came from
        return PullOutcome(image, PullSource.LAN, lan.registry, lan_digest, pulled.size if pulled else 0,
                           time.monotonic() - started, 1)

    def report_lan_failure(self, lan: ImageName, message: str) -> None:
        print(f"LAN pull of {lan} failed; falling back to {self.config.images.registries.public}", file=self.err, flush=True)
        for line in message.splitlines() or [""]:
            print(f"[local-pull] {line}", file=self.err, flush=True)

    def pull_public(self, image: ImageName, public: ImageName, public_digest: str | None, started: float) -> PullOutcome:
        attempts = self.retried_public_pull(public)
        if public.registry:
            tag(self.client, public, image)
        pulled = local_image(self.client, image)
        digest = (pulled.digest_for(public.pull_repository) if pulled else None) or public_digest
        return PullOutcome(image, PullSource.PUBLIC, public.registry or "docker.io", digest, pulled.size if pulled else 0,
                           time.monotonic() - started, attempts)

    def retried_public_pull(self, public: ImageName) -> int:
        """Pull from the public registry with the retry policy (retryable failures only), in one
        of the host's public-pull slots; the number of attempts, or a ToolFailure that says why
        it stopped."""
        policy = self.config.pull.public
        retried = retrying(policy, f"pull {public}", self.say, self.sleep)
        slot, self._slot = self._slot or self.public_slots().take(self.say, self.sleep), None

        def attempt() -> None:
            progress = self._progress(public)
            started = time.monotonic()
            try:
                with github.group(f"pull {public} (attempt)", self.env, self.out):
                    downloaded = stream_pull(self.client, public, policy.stall_s, policy.stall_s, progress.update,
                                             room_check=self._room_check(), connect_timeout_s=self.config.pull.connect_timeout_s)
                self._record_rate(self.config.images.registries.public, downloaded, time.monotonic() - started)
            finally:
                progress.close()

        try:
            retried(attempt)
        except PullFailure as failure:
            attempts = retried.statistics.get("attempt_number", 1)
            why = {FailureKind.NOT_FOUND: "not found (not retried)",
                   FailureKind.UNAUTHORIZED: "unauthorized or denied (not retried)",
                   FailureKind.DISK: "out of disk (not retried)",
                   FailureKind.UNKNOWN: "unclassified error (not retried)"}.get(failure.kind, f"gave up after {attempts} attempt(s)")
            raise ToolFailure(f"pull of {public} failed: {why}: {failure.message}") from None
        finally:
            slot.release()
        return int(retried.statistics.get("attempt_number", 1))

    def _room_check(self) -> Callable[[int], str | None]:
        """Once the layer sizes are known: fail early when the Docker data root cannot hold the
        rest of the download plus the configured headroom. Checked at most every disk_check_interval_s."""
        root = self.client.info().get("DockerRootDir") or "/var/lib/docker"
        headroom, interval_s = self.config.pull.disk_headroom_bytes, self.config.pull.disk_check_interval_s
        last = [0.0]

        def check(remaining: int) -> str | None:
            now = time.monotonic()
            if now - last[0] < interval_s or not os.path.isdir(root):  # a remote engine's disk is not ours to see
                return None
            last[0] = now
            free = shutil.disk_usage(root).free
            if free < remaining + headroom:
                return (f"not enough disk: {human_bytes(free)} free in {root}, need {human_bytes(remaining)} "
                        f"still to download + {human_bytes(headroom)} headroom")
            return None

        return check


# --- candidates -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidates:
    images: tuple[ImageName, ...]  # newest first
    listed_in: str | None  # the registry whose tag list holds them all; None: names to probe (override)


def nightly_candidates(config: Config, arch: ArchSpec, rocm: str | None, today: dt.date, env: Mapping[str, str],
                       out: TextIO | None = None, session: requests.Session | None = None) -> Candidates:
    """The nightly candidates for the arch: from the `versions` override when config has one (no
    network), else from the public registry's tag list, or the LAN mirror's when the public one
    gives no list. No list at all: a UserError naming what was tried and how to go on."""
    images = config.images
    rocm = check_rocm(images, rocm)
    if images.versions:
        return Candidates(candidate_images(images, arch, today, rocm), None)
    out = out or sys.stdout
    shape = tag_shape(images, arch, rocm)
    credentials = public_credentials(env)
    if credentials:
        github.mask(credentials[1], env, out)
    registries = [images.registries.public] + ([images.registries.lan] if images.registries.lan else [])
    tried = []
    for registry in registries:
        offered = credentials if registry == images.registries.public else None
        try:
            listed = fetch_tags(registry, images.repository, images.discovery.timeout_s, images.discovery.page_size,
                                images.discovery.max_pages, offered, session)
        except TagListError as failure:
            tried.append(scrub_token(failure.message, offered[1]) if offered else failure.message)
            continue
        found = discovered_candidates(images, arch, today, listed.tags, rocm)
        print(f"tag list of {registry}: {len(listed.tags)} tag(s) in {listed.requests} request(s), "
              f"{listed.seconds:.1f} s; {len(found)} match {shape} within {images.lookback_days} day(s)",
              file=out, flush=True)
        if not found:
            older = matching_tags(images, arch, listed.tags, rocm)
            newest = f"; the newest of any date is {older[0].tag}" if older else ""
            raise ToolFailure(f"no nightly image: none of the {len(listed.tags)} tag(s) of {images.repository} in "
                              f"{registry} matches {shape} dated {today - dt.timedelta(days=images.lookback_days - 1)} "
                              f"to {today}{newest}")
        return Candidates(found, registry)
    raise UserError(f"cannot find the nightly image: no tag list of {images.repository} "
                    f"({'; '.join(tried)}) and no versions override in config (images.versions); "
                    f"name the image with --image or {IMAGE_ENV}, or set images.versions")


def target_image(puller: Puller, arch: ArchSpec | None, image: str | None, rocm: str | None,
                 today: dt.date, candidates: Candidates | None = None) -> ImageName:
    """The image a task works on: the one named, or the newest nightly that exists for the arch."""
    if image:
        return parse_image_name(image)
    if arch is None:
        raise UserError("give an arch or an image")
    candidates = candidates or nightly_candidates(puller.config, arch, rocm, today, puller.env, puller.out)
    return puller.resolve(candidates.images, candidates.listed_in)


def pull_image(config: Config, client: docker.DockerClient, env: Mapping[str, str], arch: ArchSpec | None,
               image: str | None, rocm: str | None, today: dt.date, candidates: Candidates | None = None) -> PullOutcome:
    """`invoke pull-image`: the named image, or the newest nightly for the arch, LAN first."""
    puller = Puller(config, client, env)
    outcome = puller.pull(target_image(puller, arch, image, rocm, today, candidates))
    puller.say(outcome.summary())
    return outcome

