"""Typed, frozen config loaded once from config/*.yaml, validated, with env overrides applied here
and only here (LOCAL_DOCKER_REGISTRY, PUBLIC_DOCKER_REGISTRY, SGL_CI_CONFIG_OVERRIDE)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union

from ci.errors import ConfigError
from ci.schema import (
    NON_EMPTY,
    NON_NEGATIVE,
    POSITIVE,
    Bound,
    Check,
    Document,
    KeyPath,
    at_most,
    build,
    limits_in_force,
    read_yaml,
)
from ci.secrets import SECRET_ENV
from ci.toolkit import toolkit_home
from ci.versions import VERSION, date_pattern

PositiveInt = Annotated[int, POSITIVE]
PositiveFloat = Annotated[float, POSITIVE]
NonNegativeFloat = Annotated[float, NON_NEGATIVE]
# Numbers with an upper bound from config/limits.yaml (finite, and never absurd).
Seconds = Annotated[float, POSITIVE, Bound("seconds")]
SecondsOrZero = Annotated[float, NON_NEGATIVE, Bound("seconds")]
Minutes = Annotated[float, POSITIVE, Bound("minutes")]
WholeMinutes = Annotated[int, POSITIVE, Bound("minutes")]
Gpus = Annotated[int, POSITIVE, Bound("gpus")]
Partitions = Annotated[int, POSITIVE, Bound("partitions")]
Attempts = Annotated[int, POSITIVE, Bound("attempts")]
EMPTY: Mapping[str, str] = MappingProxyType({})

DEFAULT_CONFIG_DIR = toolkit_home() / "config"
REGISTRY_ADDRESS = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$")


# --- limits.yaml ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """Upper bounds for numbers in config and on the command line (see the file)."""

    seconds: Annotated[float, POSITIVE]
    minutes: Annotated[float, POSITIVE]
    days: Annotated[int, POSITIVE]
    partitions: Annotated[int, POSITIVE]
    gpus: Annotated[int, POSITIVE]
    retries: Annotated[int, POSITIVE]
    attempts: Annotated[int, POSITIVE]
    pages: Annotated[int, POSITIVE]
    page_size: Annotated[int, POSITIVE]
    rounds: Annotated[int, POSITIVE]
    slots: Annotated[int, POSITIVE]
    kept: Annotated[int, POSITIVE]
    bytes: Annotated[int, POSITIVE]
    lines: Annotated[int, POSITIVE]


# --- arches.yaml ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunnerPool:
    label: str  # a format string with {gpus}
    gpu_counts: Annotated[tuple[Gpus, ...], NON_EMPTY]
    # runners behind each label (by its GPU count): partitions: auto never plans more partitions
    # than the label has runners; a label not listed has no cap but the stage's max_partitions
    runners: Mapping[int, PositiveInt] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ArchSpec:
    image_arch: str
    gfx: str
    product: str
    pool: RunnerPool
    runner_aliases: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)
    name: str = ""  # filled from the mapping key by the loader


@dataclass(frozen=True, kw_only=True)  # YAML owns every number: none has a default here
class Detection:
    runner_name_pattern: str
    tool_timeout_s: Seconds


@dataclass(frozen=True)
class ArchesFile:
    arches: Annotated[Mapping[str, ArchSpec], NON_EMPTY]
    detection: Detection


# --- routing.yaml --------------------------------------------------------------------------
@dataclass(frozen=True)
class RoutingConfig:
    events: Annotated[Mapping[str, Annotated[tuple[str, ...], NON_EMPTY]], NON_EMPTY]  # event -> arches or "input"
    default_input: str
    input_arches: Annotated[tuple[str, ...], NON_EMPTY]


# --- images.yaml ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Registries:
    public: str
    lan: str | None = None  # absent from shipped config: LOCAL_DOCKER_REGISTRY (or an override) names the mirror


@dataclass(frozen=True)
class BuildConfig:
    dockerfile: str
    context: str
    args: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)  # YAML owns every number: none has a default here
class Discovery:
    """Finding the newest nightly with no version in config: the registry's tag list at pull time,
    the checkout's remote tags (git ls-remote) for the version of an image being built."""

    timeout_s: Seconds  # connect and read timeout of each HTTP request (token, each page)
    page_size: Annotated[int, POSITIVE, Bound("page_size")]  # ?n= of the tag list; further pages follow the Link header
    max_pages: Annotated[int, POSITIVE, Bound("pages")]  # a longer Link chain is an error, not a loop
    git_remote: str = "origin"
    git_timeout_s: Seconds


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """config/images.yaml: every key but the optional `versions` override is the file's."""

    repository: str
    rocm: str
    rocm_versions: Annotated[tuple[str, ...], NON_EMPTY]
    lookback_days: Annotated[int, POSITIVE, Bound("days")]
    discovery: Discovery
    tag_format: str  # the nightly's tag: images.yaml is its one home (ci.images.nightly_tag writes it)
    date_format: str
    registries: Registries
    preview_suffix: str
    use_preview: bool
    build: BuildConfig
    versions: tuple[str, ...] = ()  # an override, newest first; empty: discovered


# --- pull.yaml -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LanPullPolicy:
    first_progress_s: Seconds  # no byte of progress for this long: give up on the mirror
    window_s: Seconds  # the rate the mirror has kept is measured over this span
    budget_s: Seconds  # predicted time-to-image past this (at the window's rate) may abandon the mirror...
    public_bytes_per_s: Annotated[float, POSITIVE, Bound("bytes")]  # ...when the public registry (this, or recorded rates) ...
    faster_by: Annotated[float, POSITIVE, at_most(1000)]  # ...is at least this many times faster
    hold_s: SecondsOrZero  # the over-budget verdict must hold this long (hysteresis)...
    jitter_s: SecondsOrZero  # ...plus a random 0..jitter_s per job, so a shared slow mirror is not left all at once


@dataclass(frozen=True)
class HostPullPolicy:
    """What the jobs of one host share: one pull per image and engine, a cap on public pulls."""

    state_dir: Annotated[str, NON_EMPTY]  # locks, public-pull slots and recorded rates
    public_slots: Annotated[int, POSITIVE, Bound("slots")]  # concurrent public pulls per host
    slot_poll_s: Seconds  # how often a job waiting for a lock or a slot looks again
    rates_kept: Annotated[int, POSITIVE, Bound("kept")]  # recorded rates per registry (the median estimates)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: Attempts
    initial_wait_s: SecondsOrZero
    max_wait_s: SecondsOrZero
    jitter_s: SecondsOrZero


@dataclass(frozen=True)
class PublicPullPolicy(RetryPolicy):
    stall_s: Seconds  # no progress at all for this long counts as a (retryable) timeout


@dataclass(frozen=True)
class PullConfig:
    lan: LanPullPolicy
    public: PublicPullPolicy
    login: RetryPolicy
    host: HostPullPolicy
    probe_timeout_s: Seconds
    connect_timeout_s: Seconds
    progress_log_interval_s: Seconds
    disk_headroom_bytes: Annotated[int, NON_NEGATIVE, Bound("bytes")]
    disk_check_interval_s: Seconds  # how often a pull compares what is left to the free disk
    release_timeout_s: Seconds  # `ss -K` cutting a stalled engine's connections to the mirror


# --- stages.yaml ---------------------------------------------------------------------------
PerArchSeconds = Mapping[str, Seconds]  # "default" plus per-arch values
PerArchMinutes = Mapping[str, Minutes]
AUTO = "auto"


@dataclass(frozen=True)
class SuiteJob:
    """One CI job: a suite on the arch pools that run it, with its budgets."""

    suite: str
    arches: Annotated[tuple[str, ...], NON_EMPTY]
    gpus: Gpus
    partitions: Union[Partitions, Literal["auto"]]
    per_file_timeout_s: PerArchSeconds
    timeout_minutes: PerArchMinutes
    variant: str
    label_suffix: str
    changes: str  # a change filter of workflows.yaml, or "always"

    def per_file_timeout_for(self, arch: str) -> float:
        return self.per_file_timeout_s.get(arch, self.per_file_timeout_s["default"])

    def timeout_for(self, arch: str) -> float:
        return self.timeout_minutes.get(arch, self.timeout_minutes["default"])


@dataclass(frozen=True)
class StageSpec:
    description: str
    cadence: Literal["per-commit", "nightly"]
    needs: tuple[str, ...]
    suites: Annotated[tuple[SuiteJob, ...], NON_EMPTY]
    retries: Annotated[int, NON_NEGATIVE, Bound("retries")]  # retries of a file whose failure looks retryable
    kill_grace_s: SecondsOrZero  # SIGTERM to a timed-out file's tree, SIGKILL this much later
    hard_deadline_margin_s: Seconds  # host stops the container this long after the stage timeout
    job_setup_minutes: Minutes  # pull + container start + install, added for the job timeout
    budget_share: Annotated[float, Check(lambda v: 0 < v <= 1, "in (0, 1]")]
    max_partitions: Partitions
    pr_label: str  # "" or a label a pull request must carry to run this stage (schedule runs it always)
    name: str = ""  # filled from the mapping key by the loader

    @property
    def nightly(self) -> bool:
        return self.cadence == "nightly"

    def jobs_for(self, arch: str) -> tuple[SuiteJob, ...]:
        return tuple(job for job in self.suites if arch in job.arches)

    def job(self, suite: str) -> SuiteJob:
        for job in self.suites:
            if job.suite == suite:
                return job
        raise ConfigError(f"unknown suite {suite!r} for {self.name} (allowed: {', '.join(j.suite for j in self.suites)})")

    def job_timeout_minutes(self, job: SuiteJob, arch: str) -> int:
        return int(-(-(job.timeout_for(arch) + self.job_setup_minutes) // 1))


# --- container.yaml --------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceSpec:
    path: str
    optional: bool = False


@dataclass(frozen=True)
class MountSpec:
    source: str  # a host path, or $WORKSPACE / $TOOLKIT
    target: str
    read_only: bool = False
    optional: bool = False


# Sources a mount (or a disk rule) may name instead of a host path, resolved on the host: the
# SGLang checkout (ci.github.workspace), this toolkit (ci.toolkit), the engine's data root.
WORKSPACE_SOURCE = "$WORKSPACE"
TOOLKIT_SOURCE = "$TOOLKIT"
DOCKER_ROOT_SOURCE = "$DOCKER_ROOT"
DEFAULT_VARIANT = "default"  # a job's container with no variant's extras
# The arch inside the container: set by the host (ci.container), read by the known-issues plugin
# and the thresholds (ci.known_issues, ci.thresholds) and left out of a replay's env (ci.reproduce).
ARCH_ENV = "SGL_CI_ARCH"


@dataclass(frozen=True)
class VariantSpec:
    privileged: bool = False
    network: str | None = None
    ipc: str | None = None
    ulimits: Mapping[str, tuple[int, int]] = field(default_factory=lambda: MappingProxyType({}))
    cap_add: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()
    mounts: tuple[MountSpec, ...] = ()


@dataclass(frozen=True, kw_only=True)  # YAML owns every number: none has a default here
class ExecSpec:
    workdir: str
    offline_retry: bool
    no_retry_exit_codes: tuple[int, ...]
    exit_code_wait_s: SecondsOrZero  # the output can end a moment before the engine records the exit code
    exit_code_poll_s: Annotated[float, POSITIVE, Bound("seconds")]
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)


@dataclass(frozen=True, kw_only=True)  # YAML owns every number: none has a default here
class StopSpec:
    sigint_grace_s: SecondsOrZero
    stop_timeout_s: SecondsOrZero


@dataclass(frozen=True, kw_only=True)  # YAML owns every number: none has a default here
class HygieneSpec:
    kill_wait_s: SecondsOrZero  # after the SIGKILL, how long to wait for the holders to go
    rounds: Annotated[int, POSITIVE, Bound("rounds")]
    interval_s: SecondsOrZero
    term_grace_s: SecondsOrZero
    vram_threshold_pct: Annotated[float, NON_NEGATIVE, at_most(100)]
    device_globs: tuple[str, ...]
    tool_timeout_s: Seconds


@dataclass(frozen=True, kw_only=True)
class ContainerConfig:
    """config/container.yaml: every key is the file's (none has a default here, so the code never
    holds a second copy of a flag, a size or a limit)."""

    name: str
    workdir: str
    exec: ExecSpec
    hygiene: HygieneSpec
    stop: StopSpec
    command: tuple[str, ...]
    reports_dir: str
    user: str
    network: str
    init: bool
    shm_size: str
    group_add: tuple[str, ...]
    cap_add: tuple[str, ...]
    security_opt: tuple[str, ...]
    ulimits: Mapping[str, tuple[int, int]]
    devices: tuple[DeviceSpec, ...]
    render_devices_file: str | None
    render_devices_fallback: DeviceSpec | None
    mounts: tuple[MountSpec, ...]
    env: Mapping[str, str] = field(repr=False)
    secret_env: tuple[str, ...]
    variants: Mapping[str, VariantSpec]

    @property
    def variant_names(self) -> tuple[str, ...]:
        return (DEFAULT_VARIANT, *self.variants)

    def variant(self, name: str) -> VariantSpec:
        """A variant's extras (the default has none); an unknown name is bad input."""
        if name not in self.variant_names:
            raise ConfigError(f"unknown variant {name!r} (allowed: {', '.join(self.variant_names)})")
        return self.variants.get(name, VariantSpec())

    @property
    def base_env(self) -> dict[str, str]:
        """The container's environment from config: the toolkit importable from its mount (the
        runner, the known-issues plugin), then `env`."""
        return {"PYTHONPATH": self.toolkit_target, **self.env}

    @property
    def toolkit_target(self) -> str:
        """Where the toolkit is mounted in the container: the target of the one $TOOLKIT mount
        (the loader checks there is exactly one, read-only)."""
        return next(m.target for m in self.mounts if m.source == TOOLKIT_SOURCE)


# --- runner.yaml -----------------------------------------------------------------------------
def _regex(value: str) -> bool:
    try:
        re.compile(value)
    except re.error:
        return False
    return True


Regex = Annotated[str, Check(_regex, "a valid regular expression")]


@dataclass(frozen=True)
class RunnerConfig:
    """How the in-container runner treats each file; it gets these as ci.runner.FileRuns."""

    retryable: Regex
    not_retryable: Regex
    kill_wait_s: SecondsOrZero
    output_drain_s: SecondsOrZero
    tail_lines: Annotated[int, POSITIVE, Bound("lines")]


# --- suites.yaml -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ListedFile:
    path: str
    est_time: Seconds | None = None  # none: measured time, else the suite's mean estimate


@dataclass(frozen=True)
class CommandUnit:
    """A unit of a suite that is a command, not a registered file (SGLang's diffusion runner,
    the sgl-kernel pytest files). `{partition}` (0-based) and `{partitions}` in argv are filled in
    when `every_partition` is set; otherwise the unit is partitioned like a file."""

    name: str
    argv: Annotated[tuple[str, ...], NON_EMPTY]
    cwd: str  # relative to the workspace
    est_time: Seconds
    every_partition: bool
    only_partition: Union[Partitions, None]  # 1-based; None: wherever partitioning puts it
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)


@dataclass(frozen=True)
class Acknowledgement:
    """A registration mistake in the test tree that is not ours to fix: warned on every plan."""

    suites: Annotated[tuple[str, ...], NON_EMPTY]
    reason: str
    link: str


@dataclass(frozen=True)
class SuitesConfig:
    test_root: str
    register_function: str
    cuda_register_function: str
    files: Mapping[str, tuple[ListedFile, ...]]
    commands: Mapping[str, tuple[CommandUnit, ...]]
    est_time_overrides: Mapping[str, Mapping[str, Seconds]]
    runner: Literal["auto", "unittest", "pytest"]
    acknowledged: tuple[Acknowledgement, ...]


# --- workflows.yaml --------------------------------------------------------------------------
@dataclass(frozen=True)
class NightlyBuild:
    arch: str
    rocm: str


_SHA = re.compile(r"[0-9a-f]{40}")
FULL_SHA = Check(lambda v: bool(_SHA.fullmatch(v)), "a full 40-hex commit SHA (never a branch or tag)")


@dataclass(frozen=True)
class PinnedAction:
    repository: str  # owner/name
    sha: Annotated[str, FULL_SHA]
    version: str  # the tag the SHA is, for people


@dataclass(frozen=True)
class WorkflowSecrets:
    """GitHub secret names: pull-only for jobs that run code under test, push for publish jobs."""

    pull_username: str
    pull_token: str
    push_username: str
    push_token: str
    hf_token: str


@dataclass(frozen=True)
class AcceptedFinding:
    """A workflow audit finding below medium severity that stays, and why."""

    ident: str  # zizmor's audit name, e.g. template-injection
    expression: str  # a regular expression the flagged expression (or line) must match whole
    reason: str


@dataclass(frozen=True)
class WorkflowsConfig:
    toolkit_repository: str
    toolkit_ref: Annotated[str, FULL_SHA]
    toolkit_install_dir: str
    python_version: str
    actions: Mapping[str, PinnedAction]
    secrets: WorkflowSecrets
    publish_environment: Annotated[str, NON_EMPTY]
    pr_branches: tuple[str, ...]
    pr_test_schedule: str
    nightly_schedule: str
    route_runner: str
    route_timeout_minutes: WholeMinutes
    nightly_builds: tuple[NightlyBuild, ...]
    build_runner: str
    build_timeout_minutes: WholeMinutes
    mirror_runner: str
    mirror_timeout_minutes: WholeMinutes
    # Change detection: filter name -> path globs (fnmatch-style, `**` for any depth, `!` excludes).
    change_filters: Mapping[str, Annotated[tuple[str, ...], NON_EMPTY]]
    fastfail_bypass_label: str  # a pull request with this label runs every stage and file
    git_timeout_s: Seconds  # the route job's `git diff` for change detection
    pr_test_rocm: str  # the PR workflow's image flavour unless a dispatch picks another
    nightly_test_rocm: str
    nightly_test_schedule: str  # the nightly test workflow's cron
    reports_artifact: Annotated[str, NON_EMPTY]  # each stage job's report folder, for `--replay DIR`
    reports_retention_days: PositiveInt
    audit_accepted: tuple[AcceptedFinding, ...] = ()


# --- durations.yaml --------------------------------------------------------------------------
@dataclass(frozen=True)
class HistoryPolicy:
    keep_runs: PositiveInt
    window_days: PositiveFloat
    quantile: Annotated[float, Check(lambda v: 0 < v <= 1, "in (0, 1]")]
    max_store_bytes: PositiveInt


@dataclass(frozen=True)
class DriftPolicy:
    factor: Annotated[float, Check(lambda v: v > 1, "> 1")]
    min_runs: PositiveInt
    suggest_round_s: PositiveFloat
    chart_rows: PositiveInt


@dataclass(frozen=True)
class Unsplittable:
    path: str  # under the test root
    reason: str


@dataclass(frozen=True)
class SplittingPolicy:
    split_above_s: PositiveFloat
    min_shard_s: PositiveFloat
    max_shards: Annotated[int, Check(lambda v: v >= 2, ">= 2")]
    shard_overhead_s: NonNegativeFloat
    timeout_factor: Annotated[float, Check(lambda v: v >= 1, ">= 1")]
    timeout_slack_s: NonNegativeFloat
    testcase_bases: Annotated[tuple[str, ...], NON_EMPTY]
    import_roots: tuple[str, ...] = ()
    unsplittable: tuple[Unsplittable, ...] = ()

    def unsplittable_reason(self, path: str) -> str | None:
        return next((u.reason for u in self.unsplittable if u.path == path), None)


@dataclass(frozen=True)
class StoreTransport:
    """How the store travels: actions/cache between workflow runs, artifacts within one."""

    cache_key: str  # saved as <cache_key>-<run id>-<attempt>, restored by the prefix <cache_key>- (newest)
    store_artifact: str  # the store the route job planned on, handed to the stage jobs
    records_artifact: str  # each stage job's record: <records_artifact>-<suite>-<partition>
    retention_days: PositiveInt


@dataclass(frozen=True)
class DurationsConfig:
    store_path: str  # relative to the workspace
    transport: StoreTransport
    history: HistoryPolicy
    drift: DriftPolicy
    splitting: SplittingPolicy


# --- replay.yaml -----------------------------------------------------------------------------
REPORT_URL_FIELDS = ("server", "repository", "run_id", "attempt", "label")


def _url_template(text: str) -> bool:
    try:
        text.format(**{name: "" for name in REPORT_URL_FIELDS})
    except (KeyError, IndexError, ValueError):
        return False
    return text == "" or text.startswith(("http://", "https://"))


@dataclass(frozen=True)
class ReplayConfig:
    """Replaying a CI job from its report (ci.replay)."""

    git_timeout_s: Seconds
    fetch_timeout_s: Seconds
    max_record_bytes: Annotated[int, POSITIVE, Bound("bytes")]
    # "": the report folder; else an http(s) URL template over REPORT_URL_FIELDS
    report_url: Annotated[str, Check(_url_template, "empty, or an http(s) URL using only {server}, {repository}, "
                                                    "{run_id}, {attempt}, {label}")] = ""


# --- thresholds.yaml -------------------------------------------------------------------------
BoundValue = Union[float, Mapping[Union[int, str], float]]  # one bound, or bounds keyed by `by`


@dataclass(frozen=True)
class MetricBound:
    kind: Literal["min", "max"]
    default: BoundValue
    unit: str = ""
    by: str | None = None
    amd: BoundValue | None = None
    arch: Mapping[str, BoundValue] = field(default_factory=lambda: MappingProxyType({}))


# --- known_issues.yaml -----------------------------------------------------------------------
@dataclass(frozen=True)
class KnownIssue:
    test: str  # a pytest node id; * and ? are globs
    arches: Annotated[tuple[str, ...], NON_EMPTY]
    mode: Literal["skip", "xfail"]
    reason: str
    link: str
    expires: dt.date | None = None


# --- kernels.yaml ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TopkSigmoidLimits:
    # How far (fp32 ULPs) one kernel sigmoid score may land from the reference; measured, see the file.
    # Past 32 a "tie" would span ~4e-6 of a score's value and could hide a real misroute.
    score_ulps: Annotated[int, POSITIVE, at_most(32)]
    weight_atol: Annotated[float, POSITIVE, at_most(0.1)]
    weight_rtol: Annotated[float, POSITIVE, at_most(0.1)]


@dataclass(frozen=True)
class KernelsConfig:
    topk_sigmoid: TopkSigmoidLimits
# --- install.yaml ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandSpec:
    argv: Annotated[tuple[str, ...], NON_EMPTY]
    workdir: str | None = None  # default: the step's
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)


Command = Union[Annotated[tuple[str, ...], NON_EMPTY], CommandSpec]  # an argv list, or one with workdir/env


@dataclass(frozen=True)
class KernelBuild:
    sources: Annotated[tuple[str, ...], NON_EMPTY]  # paths in the checkout whose content the image records
    image_label: str  # the label `invoke build-image` stamps with their fingerprint (install.yaml is its home)
    when: Literal["changed", "always", "never"] = "changed"


@dataclass(frozen=True, kw_only=True)  # YAML owns every number: none has a default here
class Pin:
    distribution: str  # what the image has installed (pip's name)
    dockerfile: str  # in the checkout
    stage: str  # the Dockerfile stage whose ARG pins it, with {gfx} and {stage_suffix}
    arg: str
    lookahead_lines: PositiveInt  # the ARG is looked for this many lines below the stage's FROM
    keep_pattern: str | None = None  # image versions kept whatever the pin says (dev builds)
    override_env: str | None = None  # a host env variable that forces this version


@dataclass(frozen=True)
class InstallStep:
    name: str
    run: Annotated[tuple[Command, ...], NON_EMPTY]
    timeout_s: PositiveFloat
    kind: Literal["command", "kernel", "pin"] = "command"
    workdir: str | None = None  # default: the checkout
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)
    optional: bool = False  # a failure is reported and tolerated
    retry: bool = True  # a failure that looks like a network error is retried
    kernel: KernelBuild | None = None
    pin: Pin | None = None

    def commands(self) -> tuple[CommandSpec, ...]:
        return tuple(c if isinstance(c, CommandSpec) else CommandSpec(c) for c in self.run)


@dataclass(frozen=True)
class Flavor:
    extras: str
    dockerfile_stage_suffix: str = ""


@dataclass(frozen=True)
class PipCache:
    mount: str  # the runner's data mount in the container
    dir: str  # pip's cache on it
    fallback_dir: str  # without the mount (dies with the container)


@dataclass(frozen=True)
class Proof:
    package: str  # the import name under test
    distribution: str  # its pip name, for the version
    expected_root: str  # where in the container it must be imported from
    version_file: str | None = None  # in the checkout; the version it names must be the imported one
    version_pattern: str = '__version__ = "([^"]+)"'


@dataclass(frozen=True, kw_only=True)  # YAML owns every number: none has a default here
class InstallConfig:
    proof: Proof
    flavors: Annotated[Mapping[str, Flavor], NON_EMPTY]
    pip_cache: PipCache
    retry: RetryPolicy
    network_errors: Annotated[tuple[str, ...], NON_EMPTY]
    steps: Annotated[tuple[InstallStep, ...], NON_EMPTY]
    python: str = "python3"
    probe_timeout_s: PositiveFloat
    host_tool_timeout_s: PositiveFloat
    output_tail_lines: PositiveInt

    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]


# --- health.yaml -----------------------------------------------------------------------------
CheckMode = Literal["fail", "warn", "off"]


@dataclass(frozen=True)
class HealthChecks:
    """Each preflight check: fail (the job stops, an infrastructure failure), warn, or off."""

    gpus: CheckMode
    leaked_vram: CheckMode
    ecc: CheckMode
    disk: CheckMode
    reachability: CheckMode


@dataclass(frozen=True)
class DiskRule:
    path: str  # $DOCKER_ROOT (the engine's data root), $WORKSPACE, or an absolute path
    min_free_gib: PositiveFloat


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str  # http(s)://host[:port][/path]; any HTTP answer counts as reachable


@dataclass(frozen=True)
class ResetPolicy:
    mode: Literal["auto", "warn", "off"]
    commands: Mapping[str, Annotated[tuple[str, ...], NON_EMPTY]]  # tool -> argv with {gpu}
    timeout_s: PositiveFloat
    settle_s: NonNegativeFloat  # wait after a reset before reading the GPU again


@dataclass(frozen=True)
class SmokeTest:
    min_gpus: PositiveInt  # jobs with at least this many GPUs run it
    timeout_s: PositiveFloat
    backend: str  # nccl (RCCL on ROCm); gloo is the CPU stand-in the tests use
    argv: Annotated[tuple[str, ...], NON_EMPTY]  # with {gpus}, {backend}, {timeout_s}, {elements}, {toolkit}
    workdir: str
    elements: PositiveInt  # float32 values each rank all-reduces


@dataclass(frozen=True)
class Classification:
    gpu_hang_exit_codes: Annotated[tuple[int, ...], NON_EMPTY]  # a file ending so: the GPU hung (SIGABRT)
    stuck_busy_pct: Annotated[float, Check(lambda v: 0 < v <= 100, "in (0, 100]")]  # after a timeout


@dataclass(frozen=True)
class HealthConfig:
    checks: HealthChecks
    tool_timeout_s: PositiveFloat
    vram_threshold_pct: Annotated[float, Check(lambda v: 0 < v <= 100, "in (0, 100]")]
    max_uncorrectable: Annotated[int, NON_NEGATIVE]
    warn_correctable: Annotated[int, NON_NEGATIVE]
    shared_devices: tuple[str, ...]  # device files any GPU's process holds (/dev/kfd, /dev/nvidiactl)
    gpu_devices: tuple[str, ...]  # per-GPU device files, when sysfs cannot say which is whose
    disk: tuple[DiskRule, ...]
    docker_root: str  # when the engine does not say
    reachability_timeout_s: PositiveFloat
    endpoints: tuple[Endpoint, ...]
    reset: ResetPolicy
    smoke: SmokeTest
    classify: Classification


@dataclass(frozen=True)
class Config:
    arches: Mapping[str, ArchSpec]
    detection: Detection
    routing: RoutingConfig
    images: ImageConfig
    pull: PullConfig
    stages: Mapping[str, StageSpec]
    suites: SuitesConfig
    kernels: KernelsConfig
    durations: DurationsConfig
    container: ContainerConfig
    runner: RunnerConfig
    workflows: WorkflowsConfig
    thresholds: Mapping[str, Mapping[str, MetricBound]]
    known_issues: tuple[KnownIssue, ...]
    install: InstallConfig
    health: HealthConfig
    limits: Limits
    replay: ReplayConfig
    source: Path

    def arch(self, name: str) -> ArchSpec:
        if name not in self.arches:
            raise ConfigError(f"unknown arch {name!r} (allowed: {', '.join(self.arches)})")
        return self.arches[name]

    def known_suites(self) -> list[str]:
        """Every suite a job runs."""
        return [job.suite for stage in self.stages.values() for job in stage.suites]

    def acknowledged(self, suite: str) -> Acknowledgement | None:
        return next((a for a in self.suites.acknowledged if suite in a.suites), None)

    def stage(self, name: str) -> StageSpec:
        key = name.replace("_", "-")
        if key not in self.stages:
            raise ConfigError(f"unknown stage {name!r} (allowed: {', '.join(self.stages)})")
        return self.stages[key]


# Each config file and the type its top level must have.
FILES: dict[str, tuple[str, Any]] = {
    "limits": ("limits.yaml", Limits),  # first: the bounds every other file is built with
    "arches": ("arches.yaml", ArchesFile),
    "routing": ("routing.yaml", RoutingConfig),
    "images": ("images.yaml", ImageConfig),
    "pull": ("pull.yaml", PullConfig),
    "stages": ("stages.yaml", Mapping[str, StageSpec]),
    "container": ("container.yaml", ContainerConfig),
    "runner": ("runner.yaml", RunnerConfig),
    "suites": ("suites.yaml", SuitesConfig),
    "workflows": ("workflows.yaml", WorkflowsConfig),
    "thresholds": ("thresholds.yaml", Mapping[str, Mapping[str, MetricBound]]),
    "known_issues": ("known_issues.yaml", tuple[KnownIssue, ...]),
    "kernels": ("kernels.yaml", KernelsConfig),
    "install": ("install.yaml", InstallConfig),
    "durations": ("durations.yaml", DurationsConfig),
    "health": ("health.yaml", HealthConfig),
    "replay": ("replay.yaml", ReplayConfig),
}

OVERRIDE_ENV = "SGL_CI_CONFIG_OVERRIDE"
ROCM_ENV = "ROCM_VERSION"
CONFIG_DIR_ENV = "SGL_CI_CONFIG_DIR"


def load_config(config_dir: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, override, validate and freeze every config file. The one way config is loaded."""
    env = os.environ if env is None else env
    directory = Path(config_dir or env.get(CONFIG_DIR_ENV) or DEFAULT_CONFIG_DIR)
    docs = {key: read_yaml(directory / filename) for key, (filename, _) in FILES.items()}
    override_path = env.get(OVERRIDE_ENV)
    if override_path:
        _apply_override_file(docs, read_yaml(Path(override_path)))
    _apply_env(docs, env)
    limits: Limits = build(Limits, docs["limits"].data, docs["limits"])
    with limits_in_force(dataclasses.asdict(limits)):
        built = {key: build(kind, docs[key].data, docs[key]) for key, (_, kind) in FILES.items()}
    arches_file: ArchesFile = built["arches"]
    config = Config(
        arches=MappingProxyType({n: dataclasses.replace(a, name=n) for n, a in arches_file.arches.items()}),
        detection=arches_file.detection,
        routing=built["routing"],
        images=built["images"],
        pull=built["pull"],
        stages=MappingProxyType({n: dataclasses.replace(s, name=n) for n, s in built["stages"].items()}),
        kernels=built["kernels"],
        durations=built["durations"],
        container=built["container"],
        runner=built["runner"],
        suites=built["suites"],
        workflows=built["workflows"],
        thresholds=built["thresholds"],
        known_issues=built["known_issues"],
        install=built["install"],
        health=built["health"],
        limits=limits,
        replay=built["replay"],
        source=directory,
    )
    _cross_check(config, docs)
    return config


def _apply_override_file(docs: dict[str, Document], override: Document) -> None:
    if not isinstance(override.data, dict):
        raise override.fail((), "an override file must be a mapping of config file names to values")
    for key, value in override.data.items():
        if key not in docs:
            raise override.fail((key,), f"unknown config file {key!r} (allowed: {', '.join(docs)})")
        docs[key] = Document(f"{docs[key].source} + {override.source}", _merge(docs[key].data, value), {
            **docs[key].lines, **{p[1:]: n for p, n in override.lines.items() if p[:1] == (key,)}})


def _merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        merged = dict(base)
        for key, value in top.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return top


def _apply_env(docs: dict[str, Document], env: Mapping[str, str]) -> None:
    for variable, key in (("LOCAL_DOCKER_REGISTRY", "lan"), ("PUBLIC_DOCKER_REGISTRY", "public")):
        value = env.get(variable)
        if value is None or value == "":
            continue
        value = value.strip().removesuffix("/")
        problem = registry_problem(value)
        if problem:
            raise ConfigError(f"{variable}={shown_registry(value)!r} {problem}")
        data = docs["images"].data
        if isinstance(data, dict) and isinstance(data.setdefault("registries", {}), dict):
            data["registries"][key] = value  # anything else fails the build below, naming the file
    rocm = env.get(ROCM_ENV)
    if rocm:  # SGLang's scripts take the image's ROCm flavour from this variable
        data = docs["images"].data
        allowed = (data.get("rocm_versions") if isinstance(data, dict) else None) or []
        if rocm not in allowed:
            raise ConfigError(f"{ROCM_ENV}={rocm!r} is not a ROCm version of the images (allowed: {', '.join(map(str, allowed))})")
        data["rocm"] = rocm


def shown_registry(value: str) -> str:
    """A registry as it may be printed: credentials (user:password@) never echoed."""
    scheme, sep, rest = value.rpartition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def registry_problem(value: str) -> str | None:
    """Why `value` is not a registry address (host or host:port, no scheme, no credentials)."""
    if REGISTRY_ADDRESS.match(value) and len(value) <= 255:
        port = value.rpartition(":")[2] if not value.endswith("]") and ":" in value else None
        if port is None or 1 <= int(port) <= 65535:
            return None
        return "has a port out of range (allowed: host or host:port, port 1-65535)"
    if "@" in value:
        return "carries credentials (allowed: host or host:port; log in with DOCKERHUB_AMD_USERNAME/TOKEN)"
    return "is not a registry address (allowed: host or host:port, no scheme)"


def _cross_check(config: Config, docs: dict[str, Document]) -> None:
    for key in ("public", "lan"):  # config and override held to the env variables' rules
        value = getattr(config.images.registries, key)
        problem = registry_problem(value) if value is not None else None
        if problem:
            raise docs["images"].fail(("registries", key), f"{shown_registry(value)!r} {problem}")
    for index, name in enumerate(config.container.secret_env if config.container else ()):
        if name not in SECRET_ENV:
            raise docs["container"].fail(("secret_env", index), f"{name!r} is not a secret the toolkit masks and "
                                         f"scrubs (allowed: {', '.join(SECRET_ENV)}; add new ones to ci/secrets.py)")
    workspace = [m for m in config.container.mounts if m.source == WORKSPACE_SOURCE]
    if [m.target for m in workspace] != [config.container.workdir]:
        raise docs["container"].fail(("mounts",), f"needs exactly one mount of {WORKSPACE_SOURCE}, at workdir "
                                     f"{config.container.workdir} (where every path under the workspace is found inside), "
                                     f"found {', '.join(m.target for m in workspace) or 'none'}")
    toolkit = [i for i, m in enumerate(config.container.mounts) if m.source == TOOLKIT_SOURCE]
    if len(toolkit) != 1:
        raise docs["container"].fail(("mounts",), f"needs exactly one mount of {TOOLKIT_SOURCE} (the runner, the known-issues "
                                     f"plugin and the smoke test run from it), found {len(toolkit)}")
    if not config.container.mounts[toolkit[0]].read_only:
        raise docs["container"].fail(("mounts", toolkit[0], "read_only"), "the toolkit is mounted read-only: the host runs "
                                     "it again after the tests")
    for name, spec in config.arches.items():
        _check_template(spec.pool.label, {"gpus": 1}, docs["arches"], ("arches", name, "pool", "label"))
    fields = {"gfx": "gfx942", "rocm": "rocm700", "version": "v0.0.0", "image_arch": "mi30x"}
    for arg in config.images.build.args:
        _check_template(config.images.build.args[arg], fields, docs["images"], ("build", "args", arg))
    arches = list(config.arches)
    allowed = f"allowed: {', '.join(arches)}"
    routing = docs["routing"]
    for event, targets in config.routing.events.items():
        for index, target in enumerate(targets):
            if target != "input" and target not in config.arches:
                raise routing.fail(("events", event, index), f"unknown arch {target!r} ({allowed}, or input)")
    for index, arch in enumerate(config.routing.input_arches):
        if arch not in config.arches:
            raise routing.fail(("input_arches", index), f"unknown arch {arch!r} ({allowed})")
    if config.routing.default_input not in config.routing.input_arches:
        raise routing.fail(("default_input",), f"{config.routing.default_input!r} is not one of input_arches")
    _check_stages(config, docs["stages"], docs["suites"], allowed)
    images = docs["images"]
    if config.images.rocm not in config.images.rocm_versions:
        raise images.fail(("rocm",), f"{config.images.rocm!r} is not in rocm_versions")
    _check_image_tags(config.images, images)
    for name, spec in config.arches.items():
        if "{gpus}" not in spec.pool.label:
            raise docs["arches"].fail(("arches", name, "pool", "label"), "must contain {gpus}")
        for gpus in spec.pool.runners:
            if gpus not in spec.pool.gpu_counts:
                raise docs["arches"].fail(("arches", name, "pool", "runners", gpus),
                                          f"no pool of {gpus} GPU(s) (gpu_counts: {list(spec.pool.gpu_counts)})")
    _check_thresholds(config, docs["thresholds"], allowed)
    _check_install(config.install, docs["install"])
    _check_health(config.health, docs["health"])
    for arch in config.suites.est_time_overrides:
        if arch not in config.arches:
            raise docs["suites"].fail(("est_time_overrides", arch), f"unknown arch {arch!r} ({allowed})")
    for key in ("pr_test_rocm", "nightly_test_rocm"):
        if getattr(config.workflows, key) not in config.images.rocm_versions:
            raise docs["workflows"].fail((key,), f"{getattr(config.workflows, key)!r} is not in images.yaml rocm_versions")
    _check_workflows(config, docs["workflows"])
    for index, nightly_build in enumerate(config.workflows.nightly_builds):
        if nightly_build.arch not in config.arches:
            raise docs["workflows"].fail(("nightly_builds", index, "arch"), f"unknown arch {nightly_build.arch!r} ({allowed})")
        if nightly_build.rocm not in config.images.rocm_versions:
            raise docs["workflows"].fail(("nightly_builds", index, "rocm"), f"unknown ROCm {nightly_build.rocm!r}")
    for key in ("files", "commands"):
        for suite in getattr(config.suites, key):
            if suite not in config.known_suites():
                raise docs["suites"].fail((key, suite), f"unknown suite {suite!r}: no job in stages.yaml runs it")
    for index, ack in enumerate(config.suites.acknowledged):
        for suite in ack.suites:
            if suite in config.known_suites():
                raise docs["suites"].fail(("acknowledged", index, "suites"),
                                          f"{suite!r} has a job in stages.yaml: it needs no acknowledgement")
    for index, issue in enumerate(config.known_issues):
        for arch in issue.arches:
            if arch not in config.arches:
                raise docs["known_issues"].fail((index, "arches"), f"unknown arch {arch!r} ({allowed})")
    try:
        re.compile(config.detection.runner_name_pattern)
    except re.error as exc:
        raise docs["arches"].fail(("detection", "runner_name_pattern"), f"not a regular expression: {exc}") from None
    if "token" not in re.compile(config.detection.runner_name_pattern).groupindex:
        raise docs["arches"].fail(("detection", "runner_name_pattern"), "needs a named group (?P<token>...)")



def _check_stages(config: Config, doc: Document, suites_doc: Document, allowed: str) -> None:
    seen: dict[str, str] = {}
    variants = set(config.container.variant_names)
    for name, stage in config.stages.items():
        for needed in stage.needs:
            if needed not in config.stages or needed == name:
                raise doc.fail((name, "needs"), f"unknown stage {needed!r} (allowed: {', '.join(s for s in config.stages if s != name)})")
        for index, job in enumerate(stage.suites):
            where = (name, "suites", index)
            if job.suite in seen:
                raise doc.fail(where + ("suite",), f"suite {job.suite!r} already has a job in {seen[job.suite]}")
            seen[job.suite] = name
            for arch in job.arches:
                if arch not in config.arches:
                    raise doc.fail(where + ("arches",), f"unknown arch {arch!r} ({allowed})")
            for key in ("per_file_timeout_s", "timeout_minutes"):
                values = getattr(job, key)
                if "default" not in values:
                    raise doc.fail(where + (key,), "needs a 'default' value")
                for arch in values:
                    if arch != "default" and arch not in job.arches:
                        raise doc.fail(where + (key, arch), f"{arch!r} is not one of the job's arches ({', '.join(job.arches)})")
            if job.variant not in variants:
                raise doc.fail(where + ("variant",), f"unknown variant {job.variant!r} (allowed: {', '.join(sorted(variants))})")
            filters = {"always", *(config.workflows.change_filters if config.workflows else ())}
            if job.changes not in filters:
                raise doc.fail(where + ("changes",), f"unknown change filter {job.changes!r} (allowed: {', '.join(sorted(filters))})")
def _check_workflows(config: Config, doc: Document) -> None:
    """Trust levels stay apart: publish runners are no test pool, push secrets are not pull secrets."""
    pools = {a.pool.label.format(gpus=n) for a in config.arches.values() for n in a.pool.gpu_counts}
    for key in ("build_runner", "mirror_runner"):
        label = getattr(config.workflows, key)
        if label in pools or label == config.workflows.route_runner:
            raise doc.fail((key,), f"{label!r} is a label test jobs run on (allowed: a publish-only label, "
                                   "so code under test never shares a machine with the push token)")
    names = config.workflows.secrets
    if {names.push_username, names.push_token} & {names.pull_username, names.pull_token, names.hf_token}:
        raise doc.fail(("secrets",), "the push secrets must not be the pull secrets (allowed: separate names)")
    for index, accepted in enumerate(config.workflows.audit_accepted):
        try:
            re.compile(accepted.expression)
        except re.error as exc:
            raise doc.fail(("audit_accepted", index, "expression"), f"not a regular expression: {exc}") from None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", config.workflows.toolkit_install_dir):
        raise doc.fail(("toolkit_install_dir",), "must be one folder name (letters, digits, _ . -)")


def _check_template(text: str, fields: Mapping[str, Any], doc: Document, path: tuple) -> None:
    """A format string in config must render: only the named fields, no spec, conversion,
    attribute or index (checked at load, not when a job first uses it)."""
    allowed = f"allowed: {', '.join('{' + f + '}' for f in fields)}; write {{{{ and }}}} for braces"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise doc.fail(path, f"{text!r} is not a format string that renders ({exc}; {allowed})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in fields or spec or conversion:
            raise doc.fail(path, f"{text!r}: placeholder {{{name}{'!' + conversion if conversion else ''}"
                                 f"{':' + spec if spec else ''}}} does not render ({allowed})")


def _check_image_tags(images: ImageConfig, doc: Document) -> None:
    """The tag format is the one home of the tag's shape: candidates are built from it and tag
    lists are parsed with a pattern made from it, so both must be able to read it back."""
    parsed = list(string.Formatter().parse(images.tag_format))
    fields = [f for _, f, _, _ in parsed if f is not None]
    if not set(fields) <= {"version", "rocm", "image_arch", "date"}:
        raise doc.fail(("tag_format",), "may only use {version}, {rocm}, {image_arch} and {date}")
    if any(spec or conversion for _, f, spec, conversion in parsed if f is not None):
        raise doc.fail(("tag_format",), "placeholders take no format spec or conversion")
    for name in ("version", "date"):
        if fields.count(name) != 1:
            raise doc.fail(("tag_format",), f"must use {{{name}}} exactly once")
    if len(fields) != len(set(fields)):
        raise doc.fail(("tag_format",), "may use each placeholder once")
    try:
        date_pattern(images.date_format)
    except ValueError as exc:
        raise doc.fail(("date_format",), str(exc)) from None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", images.preview_suffix):
        raise doc.fail(("preview_suffix",), "must be letters, digits, '_', '.' or '-' (it ends a tag)")
    for index, version in enumerate(images.versions):
        if not re.fullmatch(VERSION, version):
            raise doc.fail(("versions", index), f"{version!r} is not a release version (e.g. v0.5.10, v0.5.10rc1, v0.5.10.post1)")


def _check_thresholds(config: Config, doc: Document, allowed: str) -> None:
    for test, metrics in config.thresholds.items():
        for metric, bound in metrics.items():
            where = (test, metric)
            for arch in bound.arch:
                if arch not in config.arches:
                    raise doc.fail(where + ("arch", arch), f"unknown arch {arch!r} ({allowed})")
            values = [bound.default, bound.amd, *bound.arch.values()]
            keyed = [isinstance(v, Mapping) for v in values if v is not None]
            if bound.by and not all(keyed):
                raise doc.fail(where, f"has by: {bound.by}, so every bound must be a mapping of {bound.by} values")
            if not bound.by and any(keyed):
                raise doc.fail(where, "a bound given per parameter value needs `by: <parameter>`")


INSTALL_PLACEHOLDERS = ("extras", "pip_cache", "gfx", "stage_suffix", "checkout")  # and {pin} in a pin step
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
FLAVORS = ("rocm700", "rocm720", "rocm724")  # what ci.install.detect_flavor can report


def _check_install(install: InstallConfig, doc: Document) -> None:
    missing = [f for f in FLAVORS if f not in install.flavors]
    if missing:
        raise doc.fail(("flavors",), f"needs every flavor the image can report: missing {', '.join(missing)}")
    for flavor in install.flavors:
        if flavor not in FLAVORS:
            raise doc.fail(("flavors", flavor), f"unknown flavor {flavor!r} (allowed: {', '.join(FLAVORS)})")
    for index, pattern in enumerate(install.network_errors):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise doc.fail(("network_errors", index), f"not a regular expression: {exc}") from None
    seen: set[str] = set()
    for index, step in enumerate(install.steps):
        where = ("steps", index)
        if not STEP_NAME.match(step.name):
            raise doc.fail(where + ("name",), f"{step.name!r}: a step name is lower-case letters, digits and -")
        if step.name in seen:
            raise doc.fail(where + ("name",), f"duplicate step name {step.name!r}")
        seen.add(step.name)
        for kind in ("kernel", "pin"):
            given = getattr(step, kind) is not None
            if given != (step.kind == kind):
                raise doc.fail(where, f"kind {step.kind} " + (f"needs a `{kind}:` block" if not given else f"takes no `{kind}:` block"))
        allowed = INSTALL_PLACEHOLDERS + (("pin",) if step.kind == "pin" else ())
        texts: list[tuple[KeyPath, str | None]] = [(("workdir",), step.workdir), *[(("env", k), v) for k, v in step.env.items()]]
        for number, command in enumerate(step.commands()):
            texts += [(("run", number), a) for a in command.argv]
            texts += [(("run", number, "workdir"), command.workdir)]
            texts += [(("run", number, "env", k), v) for k, v in command.env.items()]
        if step.pin:
            texts += [(("pin", "stage"), step.pin.stage)]
        for path, text in texts:
            for name in PLACEHOLDER.findall(text or ""):
                if name not in allowed:
                    raise doc.fail(where + path, f"unknown placeholder {{{name}}} (allowed: "
                                                 f"{', '.join('{' + a + '}' for a in allowed)})")
        for pattern in ([step.pin.keep_pattern] if step.pin and step.pin.keep_pattern else []):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise doc.fail(where + ("pin", "keep_pattern"), f"not a regular expression: {exc}") from None
    try:
        if re.compile(install.proof.version_pattern).groups != 1:
            raise doc.fail(("proof", "version_pattern"), "needs exactly one group: the version")
    except re.error as exc:
        raise doc.fail(("proof", "version_pattern"), f"not a regular expression: {exc}") from None
    if not install.proof.expected_root.startswith("/"):
        raise doc.fail(("proof", "expected_root"), "must be an absolute path in the container")


HEALTH_TOOLS = ("amd-smi", "rocm-smi", "nvidia-smi")
SMOKE_PLACEHOLDERS = ("gpus", "backend", "timeout_s", "elements", "toolkit")


def _check_health(health: HealthConfig, doc: Document) -> None:
    for tool, argv in health.reset.commands.items():
        if tool not in HEALTH_TOOLS:
            raise doc.fail(("reset", "commands", tool), f"unknown tool {tool!r} (allowed: {', '.join(HEALTH_TOOLS)})")
        if "{gpu}" not in argv:
            raise doc.fail(("reset", "commands", tool), "needs {gpu} in its argv")
    for index, arg in enumerate(health.smoke.argv):
        for name in PLACEHOLDER.findall(arg):
            if name not in SMOKE_PLACEHOLDERS:
                raise doc.fail(("smoke", "argv", index), f"unknown placeholder {{{name}}} (allowed: "
                                                         f"{', '.join('{' + p + '}' for p in SMOKE_PLACEHOLDERS)})")
    for index, rule in enumerate(health.disk):
        if not (rule.path in (DOCKER_ROOT_SOURCE, WORKSPACE_SOURCE) or rule.path.startswith("/")):
            raise doc.fail(("disk", index, "path"), f"{rule.path!r}: {DOCKER_ROOT_SOURCE}, {WORKSPACE_SOURCE} or an absolute path")
    for index, endpoint in enumerate(health.endpoints):
        if not re.match(r"^https?://[^/\s]+", endpoint.url):
            raise doc.fail(("endpoints", index, "url"), f"{endpoint.url!r} is not an http(s) URL")
