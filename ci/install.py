"""Install the checkout under test in the CI container before any test file runs (config/install.yaml):
pure decisions first (image flavor, placeholders, kernel rebuild, version pins, failure class, the
import proof), then the adapter that runs the steps through the container's exec path."""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

import docker.errors
import tenacity

from ci import github
from ci.config import ArchSpec, Config, InstallConfig, InstallStep, Pin, Proof
from ci.container import Containers
from ci.container import exec_env as container_exec_env
from ci.errors import UserError

PROBE_MARK = "SGL_CI_PROBE "
PROOF_MARK = "SGL_CI_PROOF "
# What the image says about itself; stdlib only, no shell. argv: the pip cache dir.
PROBE = r"""
import json, os, sys
out = {k: os.environ.get(k) for k in ("GPU_ARCH", "PIP_CONSTRAINT", "HSA_ENABLE_IPC_MODE_LEGACY")}
out["python"] = sys.version.split()[0]
try:
    import torch
    out["torch"], out["hip"] = torch.__version__, torch.version.hip or ""
except Exception:
    out["torch"] = out["hip"] = None
files = size = 0
for root, _, names in os.walk(sys.argv[1]):
    for name in names:
        files += 1
        try:
            size += os.path.getsize(os.path.join(root, name))
        except OSError:
            pass
out["cache_files"], out["cache_bytes"] = files, size
print("SGL_CI_PROBE " + json.dumps(out))
"""
# Where `import <package>` resolves as the tests will see it: the current folder is taken off
# sys.path (a test's folder is never the package's parent), nothing is imported. argv: package, dist.
PROOF = r"""
import json, os, sys
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
import importlib.util
from importlib import metadata
out = {"origin": None, "error": None, "version": None}
try:
    spec = importlib.util.find_spec(sys.argv[1])
    out["origin"] = spec.origin if spec else None
    if spec is None:
        out["error"] = "no module named " + sys.argv[1]
except Exception as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)
try:
    out["version"] = metadata.version(sys.argv[2])
except Exception:
    pass
print("SGL_CI_PROOF " + json.dumps(out))
"""
DIST_VERSION = r"""
import sys
from importlib import metadata
try:
    print("SGL_CI_PROBE " + metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    print("SGL_CI_PROBE ")
"""
SAFE_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]{0,127}$")  # a tag, branch or commit; never an option


# --- image flavor -----------------------------------------------------------------------------
class Rocm(str, Enum):
    ROCM700 = "rocm700"
    ROCM720 = "rocm720"
    ROCM724 = "rocm724"


@dataclass(frozen=True)
class ImageReport:
    """What the container's image reports about itself (the probe's output)."""

    gpu_arch: str | None = None  # the GPU_ARCH env stamp, e.g. gfx942-rocm720
    pip_constraint: str | None = None
    hsa_ipc_legacy: str | None = None  # HSA_ENABLE_IPC_MODE_LEGACY
    torch: str | None = None
    hip: str | None = None  # torch.version.hip
    python: str = ""
    cache_files: int = 0
    cache_bytes: int = 0

    @staticmethod
    def parse(data: Mapping[str, Any]) -> ImageReport:
        return ImageReport(data.get("GPU_ARCH"), data.get("PIP_CONSTRAINT"), data.get("HSA_ENABLE_IPC_MODE_LEGACY"),
                           data.get("torch"), data.get("hip"), data.get("python") or "",
                           int(data.get("cache_files") or 0), int(data.get("cache_bytes") or 0))


@dataclass(frozen=True)
class ImageFlavor:
    gfx: str
    rocm: Rocm
    source: str  # how it was found, for the log


STAMP = re.compile(r"^(gfx942|gfx950)(-rocm720|-rocm724)?$")


def detect_flavor(report: ImageReport, runner_gfx: str) -> ImageFlavor:
    """SGLang's rules: the image's GPU_ARCH stamp when it has one; else PIP_CONSTRAINT or
    HSA_ENABLE_IPC_MODE_LEGACY=1 (set only by 7.2.4 stages) means rocm724, HIP 7.2* means rocm720,
    anything else rocm700, with the gfx of the runner. Never keyed off torch's own version."""
    stamp = STAMP.match(report.gpu_arch or "")
    if stamp:
        rocm = {"-rocm720": Rocm.ROCM720, "-rocm724": Rocm.ROCM724}.get(stamp.group(2) or "", Rocm.ROCM700)
        return ImageFlavor(stamp.group(1), rocm, f"the image's GPU_ARCH={report.gpu_arch}")
    if report.pip_constraint or report.hsa_ipc_legacy == "1":
        why = "PIP_CONSTRAINT set" if report.pip_constraint else "HSA_ENABLE_IPC_MODE_LEGACY=1"
        return ImageFlavor(runner_gfx, Rocm.ROCM724, f"no GPU_ARCH stamp; {why}")
    if (report.hip or "").startswith("7.2"):
        return ImageFlavor(runner_gfx, Rocm.ROCM720, f"no GPU_ARCH stamp; torch's HIP {report.hip}")
    return ImageFlavor(runner_gfx, Rocm.ROCM700, f"no GPU_ARCH stamp; torch's HIP {report.hip or 'absent'}")


# --- steps: placeholders, kernel and pin decisions, failure class -----------------------------
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace {name} with its value; `{}` and other braces stay (config has checked the names)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def source_fingerprint(root: Path, sources: Sequence[str]) -> str | None:
    """sha256 over the sources' files (relative path and content, in path order); None when none exist."""
    files: list[tuple[str, Path]] = []
    for source in sources:
        path = root / source
        if path.is_file():
            files.append((source, path))
        elif path.is_dir():
            files += [(p.relative_to(root).as_posix(), p) for p in path.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    if not files:
        return None
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def kernel_labels(install: InstallConfig, checkout: Path) -> dict[str, str]:
    """The image labels `invoke build-image` stamps: each kernel step's source fingerprint."""
    labels = {}
    for step in install.steps:
        if step.kernel:
            fingerprint = source_fingerprint(checkout, step.kernel.sources)
            if fingerprint:
                labels[step.kernel.image_label] = fingerprint
    return labels


def kernel_decision(when: str, checkout_fp: str | None, image_fp: str | None) -> tuple[bool, str]:
    """(build?, why)."""
    if when == "never":
        return False, "never built (config)"
    if when == "always":
        return True, "always built (config)"
    if checkout_fp is None:
        return False, "the checkout has no kernel sources"
    if image_fp == checkout_fp:
        return False, f"kernel sources match the image ({checkout_fp[:19]})"
    if image_fp is None:
        return True, "the image does not record its kernel sources"
    return True, f"kernel sources differ from the image's ({checkout_fp[:19]} vs {image_fp[:19]})"


def dockerfile_pin(text: str, stage: str, arg: str, lookahead: int) -> str | None:
    """The default of `ARG <arg>=...` within `lookahead` lines below `FROM ... AS <stage>`."""
    lines = text.splitlines()
    start = re.compile(rf"^\s*FROM\s+\S+\s+AS\s+{re.escape(stage)}\s*$", re.IGNORECASE)
    value = re.compile(rf"^\s*(?:ARG\s+|ENV\s+)?{re.escape(arg)}=(?:\"([^\"]*)\"|'([^']*)'|(\S+))")
    for index, line in enumerate(lines):
        if start.match(line):
            for below in lines[index + 1:index + 1 + lookahead]:
                found = value.match(below)
                if found:
                    return next(g for g in found.groups() if g is not None)
            return None
    return None


class PinDecision(Enum):
    MATCH = "matches the pin"
    KEEP = "a dev build in the image, kept"
    MISSING = "not in the image: install"
    MISMATCH = "differs from the pin: rebuild"
    OVERRIDE = "overridden: rebuild"

    @property
    def rebuild(self) -> bool:
        return self in (PinDecision.MISSING, PinDecision.MISMATCH, PinDecision.OVERRIDE)


def pin_decision(image_version: str | None, pinned: str, keep_pattern: str | None, override: str | None) -> PinDecision:
    """SGLang's AITER check: an override forces a rebuild; none installed is installed; equal (a
    leading v aside) matches; a dev/patched build is kept; anything else is rebuilt."""
    if override:
        return PinDecision.OVERRIDE
    if not image_version:
        return PinDecision.MISSING
    if image_version.removeprefix("v") == pinned.removeprefix("v"):
        return PinDecision.MATCH
    if keep_pattern and re.search(keep_pattern, image_version):
        return PinDecision.KEEP
    return PinDecision.MISMATCH


class FailureKind(Enum):
    NETWORK = "network"
    TIMEOUT = "timeout"
    OTHER = "error"


def classify(output: str, patterns: Sequence[str]) -> FailureKind:
    """A failed command's output: network-looking (worth another try) or anything else."""
    return FailureKind.NETWORK if any(re.search(p, output, re.IGNORECASE) for p in patterns) else FailureKind.OTHER


def error_line(output: str) -> str:
    """The line that best says what went wrong: the last one naming an error, else the last one."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    named = [line for line in lines if re.search(r"error|failed|fatal|denied|no such|not found", line, re.IGNORECASE)]
    return ((named or lines or [""])[-1])[:240]


# --- results ------------------------------------------------------------------------------------
class StepStatus(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    TIMEOUT = "timeout"
    TOLERATED = "failed, optional"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class StepResult:
    name: str
    status: StepStatus
    seconds: float = 0.0
    tries: int = 0
    note: str = ""


@dataclass(frozen=True)
class ProofResult:
    ok: bool
    origin: str | None
    version: str | None
    expected_root: str
    expected_version: str | None
    message: str


def judge_proof(report: Mapping[str, Any], proof: Proof, expected_version: str | None) -> ProofResult:
    """The import resolves under the expected root (and names the checkout's version when known)."""
    origin, version = report.get("origin"), report.get("version")
    root = posixpath.normpath(proof.expected_root)
    if not origin:
        why = report.get("error") or "no origin"
        return ProofResult(False, None, version, root, expected_version,
                           f"`import {proof.package}` does not resolve in the container ({why}); expected it under {root}")
    inside = posixpath.normpath(origin).startswith(root.rstrip("/") + "/")
    if not inside:
        return ProofResult(False, origin, version, root, expected_version,
                           f"{proof.package} is imported from {origin}, not from the checkout {root}: "
                           f"the tests would run the image's copy")
    if expected_version is not None and version != expected_version:
        return ProofResult(False, origin, version, root, expected_version,
                           f"{proof.package} is imported from {origin} but its installed version is {version}, "
                           f"not the checkout's {expected_version} (stale metadata from {root}?)")
    return ProofResult(True, origin, version, root, expected_version,
                       f"{proof.package} {version or '(no version)'} is imported from {origin}")


@dataclass(frozen=True)
class Target:
    """The container's checkout and image, as the host knows them."""

    checkout: Path  # on the host
    image: str
    digest: str | None
    labels: Mapping[str, str]
    data_mount: bool  # the runner's data mount is in the container


@dataclass(frozen=True)
class InstallResult:
    steps: tuple[StepResult, ...]
    proof: ProofResult | None
    flavor: ImageFlavor | None
    extras: str
    seconds: float
    cache_dir: str
    cache_files: int
    cache_bytes: int
    cache_on_mount: bool
    commit: str
    image: str
    digest: str | None

    @property
    def ok(self) -> bool:
        return self.proof is not None and self.proof.ok

    @property
    def cache_warm(self) -> bool:
        return self.cache_files > 0

    @property
    def failure(self) -> str:
        """One line: which step (or the proof) failed and why."""
        for step in self.steps:
            if step.status in (StepStatus.FAILED, StepStatus.TIMEOUT):
                return f"install step {step.name!r} {step.status.value}: {step.note}"
        if self.proof is not None and not self.proof.ok:
            return f"import proof failed: {self.proof.message}"
        return "" if self.ok else "install did not finish"

    def cache_line(self) -> str:
        where = "on the runner's data mount" if self.cache_on_mount else "in the container only (no data mount)"
        state = f"warm ({self.cache_files} files, {self.cache_bytes / 2**20:.1f} MiB)" if self.cache_warm else "cold"
        return f"pip cache {state} at {self.cache_dir}, {where}"

    def lines(self) -> list[str]:
        head = "OK" if self.ok else "FAILED"
        out = [f"install: {head} in {self.seconds:.1f} s; {self.cache_line()}"]
        if self.proof is not None:
            out.append(f"install: {self.proof.message}")
        out.append(f"install: checkout {self.commit}, image {self.image} {self.digest or '(no digest)'}")
        if not self.ok:
            out.append(f"install: {self.failure}")
        return out

    def markdown(self) -> str:
        head = "OK" if self.ok else "**INFRASTRUCTURE FAILURE**"
        rows = ["| step | result | time | tries | note |", "|---|---|---|---|---|"]
        rows += [f"| {s.name} | {s.status.value} | {s.seconds:.1f} s | {s.tries} | {s.note.replace('|', '/')} |"
                 for s in self.steps]
        proof = self.proof
        imported = f"`{proof.origin}`" if proof and proof.origin else "(not imported)"
        side = ["| checkout commit | imported from | version | image |", "|---|---|---|---|",
                (f"| `{self.commit}` | {imported} | {(proof.version if proof else None) or '?'} | "
                 f"`{self.image}` `{self.digest or 'no digest'}` |")]
        flavor = (f"Image flavor: {self.flavor.gfx} {self.flavor.rocm.value} ({self.flavor.source}); "
                  f"extras [{self.extras}]" if self.flavor else "Image flavor: not probed")
        parts = [f"### Install: {head} in {self.seconds:.1f} s", "", *side, "", flavor + "; " + self.cache_line(), "", *rows]
        if not self.ok:
            parts += ["", f"{self.failure}. No test file ran; the files are reported as not run."]
        return "\n".join(parts) + "\n"

    def to_json(self) -> str:
        data = asdict(self)
        data["ok"], data["cache_warm"] = self.ok, self.cache_warm
        return json.dumps(data, indent=1, default=lambda v: v.value if isinstance(v, Enum) else str(v))


def check_skip(install: InstallConfig, skip: Sequence[str]) -> tuple[str, ...]:
    unknown = [s for s in skip if s not in install.step_names()]
    if unknown:
        raise UserError(f"--skip {unknown[0]}: no such install step (allowed: {', '.join(install.step_names())})")
    return tuple(skip)


def checkout_commit(checkout: Path, env: Mapping[str, str], timeout_s: float) -> str:
    """The checkout's HEAD (what the files under test are), else $GITHUB_SHA, else unknown."""
    try:
        done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return env.get("GITHUB_SHA") or "unknown (not a git checkout)"


def expected_version(proof: Proof, checkout: Path) -> str | None:
    if not proof.version_file:
        return None
    try:
        found = re.search(proof.version_pattern, (checkout / proof.version_file).read_text())
    except OSError:
        return None
    return found.group(1) if found else None


# --- the adapter ----------------------------------------------------------------------------------
class StepFailed(Exception):
    def __init__(self, kind: FailureKind, message: str):
        super().__init__(message)
        self.kind = kind


class _Tee:
    """A binary sink for Containers.run_exec: text to `out` (if any) as it comes, the last lines kept."""

    def __init__(self, out: TextIO | None, keep_lines: int):
        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tail: deque[str] = deque(maxlen=keep_lines)
        self.partial = ""

    def write(self, chunk: bytes) -> int:
        text = self.decoder.decode(chunk)
        if self.out is not None:
            self.out.write(text)
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        self.tail.extend(lines)
        return len(chunk)

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()

    def text(self) -> str:
        return "\n".join([*self.tail, self.partial])


@dataclass
class Installer:
    """Runs config's steps in the started container (a `ci.container.Containers`)."""

    config: Config
    containers: Containers
    arch: ArchSpec
    target: Target
    env: Mapping[str, str]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    sleep: Callable[[float], None] = time.sleep

    @property
    def install(self) -> InstallConfig:
        return self.config.install

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def exec_env(self) -> dict[str, str]:
        """The tests' own env: the same exec path with the same variables."""
        return container_exec_env(self.config.container, self.arch)

    def _exec(self, argv: Sequence[str], env: Mapping[str, str], workdir: str, tee: _Tee, timeout_s: float):
        """The tests' exec path; an engine that refuses (a container gone, a bad workdir) fails the step."""
        try:
            return self.containers.run_exec(argv, env, workdir, tee, timeout_s)
        except docker.errors.APIError as exc:
            raise StepFailed(FailureKind.OTHER, f"the engine refused `{shlex.join(argv[:3])} ...` in {workdir}: "
                                                f"{exc.explanation or exc}") from None

    def _capture(self, argv: Sequence[str], mark: str, timeout_s: float, workdir: str = "/") -> str:
        """Run a probe quietly and return what follows its mark; StepFailed when it does not answer."""
        tee = _Tee(None, self.install.output_tail_lines)
        outcome = self._exec(argv, self.exec_env(), workdir, tee, timeout_s)
        for line in reversed(tee.text().splitlines()):
            if line.startswith(mark):
                return line[len(mark):]
        why = "timed out" if outcome.timed_out else f"exit code {outcome.exit_code}: {error_line(tee.text())}"
        raise StepFailed(FailureKind.OTHER, f"`{shlex.join(argv[:2])} ...` gave no answer ({why})")

    def run(self, skip: Sequence[str] = ()) -> InstallResult:
        skip = check_skip(self.install, skip)
        started = time.monotonic()
        commit = checkout_commit(self.target.checkout, self.env, self.install.host_tool_timeout_s)
        cache = self.install.pip_cache.dir if self.target.data_mount else self.install.pip_cache.fallback_dir
        py = self.install.python
        self.say(f"install: checkout {commit} ({self.target.checkout}) into {self.config.container.name}; "
                 f"image {self.target.image} {self.target.digest or ''}".rstrip())
        steps: list[StepResult] = []
        flavor, report, extras, proof = None, ImageReport(), "", None
        try:
            report = ImageReport.parse(json.loads(self._capture([py, "-c", PROBE, cache], PROBE_MARK,
                                                                 self.install.probe_timeout_s)))
        except (StepFailed, ValueError) as exc:
            steps.append(StepResult("probe", StepStatus.FAILED, note=f"the image did not report itself: {exc}"))
        if not steps:
            flavor = detect_flavor(report, self.arch.gfx)
            extras = self.install.flavors[flavor.rocm.value].extras
            self.say(f"install: image flavor {flavor.gfx} {flavor.rocm.value} ({flavor.source}); extras [{extras}]; "
                     f"python {report.python}, torch {report.torch or '-'}")
            values = {"extras": extras, "pip_cache": cache, "gfx": flavor.gfx, "checkout": self.config.container.workdir,
                      "stage_suffix": self.install.flavors[flavor.rocm.value].dockerfile_stage_suffix}
            failed = False
            for step in self.install.steps:
                if failed:
                    result = StepResult(step.name, StepStatus.NOT_RUN, note="an earlier step failed")
                elif step.name in skip:
                    result = StepResult(step.name, StepStatus.SKIPPED, note="--skip")
                else:
                    with github.group(f"install: {step.name}", self.env, self.out):
                        result = self._step(step, values)
                self.say(f"install: {step.name}: {result.status.value} in {result.seconds:.1f} s"
                         + (f" ({result.note})" if result.note else ""))
                steps.append(result)
                failed = failed or result.status in (StepStatus.FAILED, StepStatus.TIMEOUT)
            if not failed:
                proof = self._prove()
        installed = InstallResult(tuple(steps), proof, flavor, extras, time.monotonic() - started, cache,
                                  report.cache_files, report.cache_bytes, self.target.data_mount, commit,
                                  self.target.image, self.target.digest)
        for line in installed.lines():
            self.say(line)
        return installed

    def _prove(self) -> ProofResult:
        spec = self.install.proof
        expected = expected_version(spec, self.target.checkout)
        try:
            answer = json.loads(self._capture([self.install.python, "-c", PROOF, spec.package, spec.distribution],
                                              PROOF_MARK, self.install.probe_timeout_s))
        except (StepFailed, ValueError) as exc:
            answer = {"error": str(exc)}
        return judge_proof(answer, spec, expected)

    def _step(self, step: InstallStep, values: dict[str, str]) -> StepResult:
        started = time.monotonic()
        note = ""
        if step.kernel:
            build, note = kernel_decision(step.kernel.when, source_fingerprint(self.target.checkout, step.kernel.sources),
                                          self.target.labels.get(step.kernel.image_label))
            if not build:
                return StepResult(step.name, StepStatus.SKIPPED, time.monotonic() - started, 0, note)
        if step.pin:
            try:
                rebuild, note, values = self._pin(step.pin, values)
            except StepFailed as exc:
                return StepResult(step.name, StepStatus.FAILED, time.monotonic() - started, 0, str(exc))
            if not rebuild:
                return StepResult(step.name, StepStatus.OK, time.monotonic() - started, 0, note)
        deadline = started + step.timeout_s
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            self._commands(step, values, deadline)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0
            self.say(f"install: {step.name}: try {state.attempt_number}/{policy.attempts} failed with a network-looking "
                     f"error ({failure}); retrying in {wait:.1f} s")

        policy = self.install.retry
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts if step.retry else 1),
            wait=tenacity.wait_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s)
            + tenacity.wait_random(0, policy.jitter_s),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, StepFailed) and e.kind is FailureKind.NETWORK
                                              and time.monotonic() < deadline),
            before_sleep=before_sleep, sleep=self.sleep, reraise=True)
        try:
            retrying(attempt)
        except StepFailed as exc:
            seconds = time.monotonic() - started
            why = str(exc) + (" (not retried: not a network error)" if exc.kind is FailureKind.OTHER and step.retry else "")
            if step.optional:
                return StepResult(step.name, StepStatus.TOLERATED, seconds, tries, why)
            status = StepStatus.TIMEOUT if exc.kind is FailureKind.TIMEOUT else StepStatus.FAILED
            return StepResult(step.name, status, seconds, tries, why)
        return StepResult(step.name, StepStatus.OK, time.monotonic() - started, tries, note)

    def _commands(self, step: InstallStep, values: Mapping[str, str], deadline: float) -> None:
        base_env = {**self.exec_env(), **{k: fill(v, values) for k, v in step.env.items()}}
        for command in step.commands():
            argv = [fill(a, values) for a in command.argv]
            workdir = fill(command.workdir or step.workdir or "{checkout}", values)
            env = {**base_env, **{k: fill(v, values) for k, v in command.env.items()}}
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed(FailureKind.TIMEOUT, f"step timeout ({step.timeout_s:g} s) reached before `{shlex.join(argv)}`")
            self.say(f"$ {shlex.join(argv)}" + (f"  (in {workdir})" if workdir != self.config.container.workdir else ""))
            tee = _Tee(self.out, self.install.output_tail_lines)
            outcome = self._exec(argv, env, workdir, tee, left)
            if outcome.timed_out:
                raise StepFailed(FailureKind.TIMEOUT, f"`{shlex.join(argv)}` killed at the step timeout ({step.timeout_s:g} s)")
            if outcome.exit_code != 0:
                output = tee.text()
                raise StepFailed(classify(output, self.install.network_errors),
                                 f"`{shlex.join(argv)}` exited with {outcome.exit_code}: {error_line(output)}")

    def _pin(self, pin: Pin, values: dict[str, str]) -> tuple[bool, str, dict[str, str]]:
        stage = fill(pin.stage, values)
        dockerfile = self.target.checkout / pin.dockerfile
        try:
            text = dockerfile.read_text()
        except OSError as exc:
            raise StepFailed(FailureKind.OTHER, f"cannot read {pin.dockerfile} in the checkout: {exc.strerror}") from None
        pinned = dockerfile_pin(text, stage, pin.arg, pin.lookahead_lines)
        if not pinned:
            raise StepFailed(FailureKind.OTHER, f"{pin.dockerfile} has no {pin.arg}= within {pin.lookahead_lines} lines "
                                                f"below `FROM ... AS {stage}`")
        override = self.env.get(pin.override_env) if pin.override_env else None
        wanted = override or pinned
        if not SAFE_PIN.match(wanted):
            raise StepFailed(FailureKind.OTHER, f"{pin.arg} {wanted!r} is not a version or commit "
                                                f"(allowed: letters, digits, . _ + / -, not starting with -)")
        have = self._capture([self.install.python, "-c", DIST_VERSION, pin.distribution], PROBE_MARK,
                             self.install.probe_timeout_s) or None
        decision = pin_decision(have, pinned, pin.keep_pattern, override)
        note = f"{pin.distribution} {have or '(none)'} in the image, {wanted} pinned" + \
               (f" by {pin.override_env}" if override else f" by {pin.dockerfile} ({stage})") + f": {decision.value}"
        self.say(f"install: {note}")
        return decision.rebuild, note, {**values, "pin": wanted}


def target_of(container: Any, config: Config, image_name: str | None = None, digest: str | None = None) -> Target:
    """The Target of a running container: its checkout mount's host source, image, labels, data mount."""
    mounts = {m.get("Destination"): m.get("Source") for m in container.attrs.get("Mounts") or []}
    checkout = Path(mounts.get(config.container.workdir) or github.workspace(os.environ))  # no checkout mount: the workspace rule
    image = container.image
    names = [image_name] if image_name else [container.attrs.get("Config", {}).get("Image") or image.id]
    if digest is None:
        digests = image.attrs.get("RepoDigests") or []
        digest = digests[0].split("@", 1)[1] if digests else f"{image.id} (local image id)"
    return Target(checkout, names[0], digest, dict(image.labels or {}), config.install.pip_cache.mount in mounts)


def install_checkout(config: Config, containers: Containers, arch: ArchSpec, target: Target, env: Mapping[str, str],
                     out: TextIO = sys.stdout, skip: Sequence[str] = ()) -> InstallResult:
    """The install step: config's steps in the running container, then the import proof."""
    return Installer(config, containers, arch, target, env, out).run(skip)
