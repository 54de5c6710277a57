"""`nox -s stage_X -- --replay PATH_OR_URL [--only FILE]... [--failed] [--force] [--dry-run]`: a CI
job run again from its replay record (ci.replay). This box is compared with CI's first (arch,
product, GPUs, toolkit and tree commits) and refused where the run would mean nothing (fewer GPUs
than the job had, another gfx target than the image's kernels) unless --force; then the recorded
units run in their recorded order through run_stage, with the recorded retries and timeouts, the
recorded known issues, bounds and env (a config override), in the image pinned by digest, LAN first.

`--failed` takes the units that failed, timed out or were flaky (passed on retry); `--only` names
units (a file names all of its shards); the two do not mix."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

import yaml

from ci import pull, replay
from ci.arch import (
    ArchResolution,
    DeviceReport,
    arch_from_device,
    probe_device,
    resolve_arch,
)
from ci.config import ARCH_ENV, OVERRIDE_ENV, Config, load_config
from ci.container import TOOLKIT
from ci.errors import ToolFailure, UserError
from ci.gpu import read_vram
from ci.images import DOCKER_HUB, ImageName, parse_image_name
from ci.inputs import InputProblem, check_output_dir
from ci.partition import Item, Partitioning
from ci.plan import ImageSource, JobPlan, StagePlan, Unit
from ci.registry import local_image
from ci.replay import FAILED, Commit, Record, ReplayUnit
from ci.routing import job_route
from ci.stage import StageOptions, container_path, planned_files, run_stage

OVERRIDE_FILE = "replay-config.yaml"  # in the replay's report folder: the recorded settings as a config override
# Flags of a stage run that the report fixes: given with --replay, each is an error.
FIXED_BY_REPORT = ("arch", "suite", "partition", "image", "rocm", "test_root", "durations", "retries", "continue_on_error")
REPLAY_FLAGS = ("only", "failed", "force")
ALLOWED = "--only FILE (repeatable), --failed, --force, --report-dir, --dry-run"


class Verdict(enum.Enum):
    SAME = "same"
    DIFFERS = "differs"  # said, and the replay goes on
    UNKNOWN = "unknown"  # cannot be told on this box: said
    REFUSED = "refused"  # the run would mean nothing: refused unless --force


@dataclass(frozen=True)
class Comparison:
    what: str
    verdict: Verdict
    detail: str

    def line(self, forced: bool = False) -> str:
        if self.verdict is Verdict.SAME:
            return f"replay: {self.what}: same, {self.detail}"
        if self.verdict is Verdict.UNKNOWN:
            return f"replay: {self.what}: unknown here, {self.detail}"
        if self.verdict is Verdict.DIFFERS:
            return f"replay: {self.what} DIFFERS: {self.detail}"
        return f"replay: {self.what} REFUSED: {self.detail}" + (" (--force: running anyway)" if forced else "")


@dataclass(frozen=True)
class Box:
    """This machine as the replay sees it; None where it cannot be told."""

    arch: str | None
    product: str | None
    gfx: str | None
    arch_how: str  # how the arch was found, or why it was not
    gpus: int | None
    gpus_how: str
    toolkit: Commit
    tree: Commit


# --- this box --------------------------------------------------------------------------------
def look_at_box(config: Config, env: Mapping[str, str], workspace: Path,
                probe: Callable[[Config], DeviceReport | None] = probe_device,
                vram: Callable[[float], tuple[str, list] | None] = read_vram) -> Box:
    """The device tools first (what the hardware is), else RUNNER_ARCH or the runner's name; the GPU
    count from the VRAM tools (rocm-smi, nvidia-smi), as GPU hygiene reads it; the two commits."""
    report = probe(config)
    arch = product = gfx = None
    if report is not None:
        product = ", ".join(report.products) or None
        gfx = ", ".join(report.gfx) or None
        try:
            spec = arch_from_device(config, report)
            arch, how = spec.name, f"from {report.tool}"
            product, gfx = product or spec.product, gfx or spec.gfx
        except UserError as exc:
            how = str(exc)
    else:
        try:
            found = resolve_arch(config, env=env, probe=lambda c: None)
            arch, product, gfx, how = found.arch.name, found.arch.product, found.arch.gfx, f"from {found.source}"
        except UserError:
            how = "no amd-smi, rocm-smi or rocminfo answered, and neither RUNNER_ARCH nor the runner's name names one"
    reading = vram(config.container.hygiene.tool_timeout_s)
    gpus, gpus_how = (len(reading[1]), f"from {reading[0]}") if reading else (None, "no rocm-smi or nvidia-smi answered")
    timeout = config.replay.git_timeout_s
    return Box(arch, product, gfx, how, gpus, gpus_how, replay.toolkit_commit(TOOLKIT, timeout),
               Commit(replay.git_commit(workspace, timeout)))


def compare(record: Record, box: Box) -> list[Comparison]:
    """This box against CI's, in the order a person checks them."""
    ci_arch = f"{record.arch} ({record.product}, {record.gfx})"
    found: list[Comparison] = []
    if box.arch is None and box.gfx is None:
        found.append(Comparison("arch", Verdict.UNKNOWN, f"{box.arch_how}; CI ran {ci_arch}"))
    else:
        here = f"{box.arch or 'an arch config does not know'} ({box.product or '?'}, {box.gfx or '?'})"
        if box.gfx and record.gfx and record.gfx not in box.gfx.split(", "):
            found.append(Comparison("arch", Verdict.REFUSED, f"this box is {here}, CI ran {ci_arch}: the image's "
                                                              f"kernels are built for {record.gfx}"))
        elif box.arch != record.arch or (box.product and record.product not in box.product.split(", ")):
            found.append(Comparison("arch", Verdict.DIFFERS, f"this box is {here} ({box.arch_how}), CI ran {ci_arch}: "
                                                              f"the recorded bounds and timings are {record.product}'s"))
        else:
            found.append(Comparison("arch", Verdict.SAME, f"{ci_arch} ({box.arch_how})"))
    needs = f"the job had {record.gpus} GPU(s)"
    if box.gpus is None:
        found.append(Comparison("GPUs", Verdict.UNKNOWN, f"{box.gpus_how}: cannot check that this box has the "
                                                         f"{record.gpus} GPU(s) the job had"))
    elif box.gpus < record.gpus:
        found.append(Comparison("GPUs", Verdict.REFUSED, f"this box has {box.gpus} ({box.gpus_how}), {needs}"))
    else:
        found.append(Comparison("GPUs", Verdict.SAME if box.gpus == record.gpus else Verdict.DIFFERS,
                                f"this box has {box.gpus} ({box.gpus_how}), {needs}"))
    commits: list[tuple[str, Commit, Commit]] = [("toolkit", record.toolkit, box.toolkit), ("test tree", record.tree, box.tree)]
    for what, ran, mine in commits:
        if ran.commit == replay.UNKNOWN or mine.commit == replay.UNKNOWN:
            if what == "toolkit" and ran.commit == mine.commit == replay.UNKNOWN and ran.version and ran.version == mine.version:
                found.append(Comparison(what, Verdict.SAME, f"version {ran.version} (no commits to compare)"))
            else:
                found.append(Comparison(what, Verdict.UNKNOWN, f"CI ran {ran.shown}, this {what} is {mine.shown}"))
        elif ran.commit != mine.commit:
            why = ("known issues, bounds and env are applied as recorded; the runner and install are this checkout's"
                   if what == "toolkit" else "the files may differ from what CI ran")
            found.append(Comparison(what, Verdict.DIFFERS, f"CI ran {ran.shown}, this {what} is {mine.shown}: {why}"))
        else:
            found.append(Comparison(what, Verdict.SAME, f"commit {ran.shown}"))
    if not record.digest:
        found.append(Comparison("image", Verdict.DIFFERS, f"the report has no digest for {record.image}: pulled by tag, "
                                                           "which may have moved since"))
    return found


# --- which units -------------------------------------------------------------------------------
def select(record: Record, only: Sequence[str] = (), failed: bool = False) -> tuple[ReplayUnit, ...]:
    """The units to run, always in the recorded order."""
    if only and failed:
        raise UserError("--only and --failed together: give one (--only FILE names units of the report; --failed "
                        "takes those that failed, timed out or were flaky)")
    if not record.units:
        raise UserError(f"the report of {record.label} ran no units: nothing to replay")
    if failed:
        picked = tuple(u for u in record.units if u.status in FAILED)
        if not picked:
            counts = ", ".join(f"{sum(u.status is o for u in record.units)} {o.value}"
                               for o in replay.UNIT_OUTCOMES if any(u.status is o for u in record.units))
            raise UserError(f"--failed: no unit of {record.label} failed, timed out or was flaky ({counts}); "
                            f"replay without --failed to run all {len(record.units)}")
        return picked
    if not only:
        return record.units
    wanted: set[str] = set()
    root = record.test_root.strip("/") + "/"
    for given in only:
        key = given.strip()
        for prefix in ("./", root):
            key = key.removeprefix(prefix)
        hits = {u.name for u in record.units if key in (u.name, u.file)}
        if not hits:
            names = [u.name for u in record.units]
            shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
            raise UserError(f"--only {given}: not a unit of the report (allowed: {shown})")
        wanted |= hits
    return tuple(u for u in record.units if u.name in wanted)


# --- the same settings: a config override --------------------------------------------------------
def _bound_yaml(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def settings_override(record: Record, config: Config, base: Mapping[str, Any]) -> dict:
    """`base` (the override in force, if any) with the record's known issues, bounds and env over it:
    the known issues replace config's; each recorded bound is written with its value in force as
    the arch's own entry (so it wins whatever this config says); the env goes in as the exec env,
    and over the arch's env where that names the same variable."""
    arch = config.arch(record.arch)
    issues = [{"test": i.test, "arches": list(i.arches), "mode": i.mode, "reason": i.reason, "link": i.link,
               **({"expires": i.expires} if i.expires else {})} for i in record.known_issues]
    thresholds: dict[str, dict] = {}
    for t in record.thresholds:
        thresholds.setdefault(t.test, {})[t.metric] = {
            "kind": t.kind, "unit": t.unit, **({"by": t.by} if t.by else {}),
            "default": _bound_yaml(t.default), "arch": {record.arch: _bound_yaml(t.in_force)}}
    env = {k: v for k, v in record.env.items() if k != ARCH_ENV}
    top = {"known_issues": issues, "thresholds": thresholds, "container": {"exec": {"env": env}},
           "arches": {"arches": {record.arch: {"env": {k: env[k] for k in arch.env if k in env}}}}}
    return _merge(dict(base), top)


def _merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in top.items()}}
    return top


def _base_override(env: Mapping[str, str]) -> dict:
    path = env.get(OVERRIDE_ENV)
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{OVERRIDE_ENV}={path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{OVERRIDE_ENV}={path}: an override file must be a mapping of config file names to values")
    return data or {}


def env_differences(record: Record, config: Config, env: Mapping[str, str]) -> list[str]:
    """Variables the replay's test processes would get that CI's did not, or with other values."""
    here = replay.test_env(config, config.arch(record.arch), env)
    return [f"{k}={here[k]!r} (CI: {record.env[k]!r})" if k in record.env else f"{k}={here[k]!r} (not set in CI)"
            for k in sorted(here) if here[k] != record.env.get(k)]


# --- the plan ------------------------------------------------------------------------------------
def replay_plan(config: Config, record: Record, units: Sequence[ReplayUnit], workspace: Path, source: str,
                notes: Sequence[str] = ()) -> StagePlan:
    """A StagePlan whose jobs hold exactly `units`, each in its recorded partition and order, with the
    recorded per-file and stage timeouts and kill grace: run_stage runs it like any plan (`notes`
    go to its summary)."""
    spec = config.stage(record.stage)
    spec = dataclasses.replace(spec, kill_grace_s=record.kill_grace_s)
    arch = config.arch(record.arch)
    jobs = []
    for recorded in record.jobs:
        try:
            job = spec.job(recorded.suite)
        except UserError:
            raise UserError(f"the report's suite {recorded.suite} is not a job of {spec.name} in this toolkit's config "
                            f"(CI's toolkit: {record.toolkit.shown}): check that commit out to replay it") from None
        job = dataclasses.replace(job, gpus=recorded.gpus, variant=recorded.variant, partitions=recorded.partitions,
                                  per_file_timeout_s=MappingProxyType({"default": recorded.per_file_timeout_s}),
                                  timeout_minutes=MappingProxyType({"default": recorded.timeout_minutes}))
        mine = [u for u in units if u.suite == recorded.suite]
        repeated = {u.name for u in mine if sum(o.name == u.name for o in mine) > 1}  # a command of every partition

        def key(u: ReplayUnit, repeated: set[str] = repeated) -> str:
            return f"{u.name}@{u.partition}" if u.name in repeated else u.name

        built = {key(u): Unit(u.name, u.seconds, u.est_time, u.style, u.argv, u.cwd, u.env, selectors=u.selectors,
                              timeout_s=0.0 if u.style == "command" else u.timeout_s) for u in mine}
        parts = tuple(tuple(Item(key(u), u.seconds) for u in mine if u.partition == number)
                      for number in range(1, recorded.partitions + 1))
        jobs.append(JobPlan(job_route(spec, job, arch, recorded.partitions), job, Partitioning(parts),
                            MappingProxyType(built), (), recorded.per_file_timeout_s,
                            spec.budget_share * recorded.timeout_minutes * 60, False, selected=recorded.partition))
    name = parse_image_name(record.image) if record.image else None
    return StagePlan(
        stage=spec, resolution=ArchResolution(arch, f"the report {source}"), images=(name,) if name else (),
        image_overridden=name is not None, image_source=ImageSource.OVERRIDE, image_shape=record.image,
        versions_override=config.images.versions, lookback_days=config.images.lookback_days,
        lan_registry=config.images.registries.lan, public_registry=config.images.registries.public,
        test_root=workspace / record.test_root, jobs=tuple(jobs), warnings=tuple(notes), rocm=record.rocm or None,
    )


def check_files(plan: StagePlan, record: Record, box: Box) -> None:
    """Every file to run is in this workspace's tree (the tree may be at another commit)."""
    missing = [u.file for job in plan.jobs for u in job.units_to_run()
               if u.style != "command" and not (plan.test_root / u.file).is_file()]
    if missing:
        raise UserError(f"{missing[0]}{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: not in the test "
                        f"tree {plan.test_root} (CI ran tree {record.tree.shown}, this one is {box.tree.shown}); "
                        "check out CI's commit or set GITHUB_WORKSPACE to it")


# --- the image, pinned by digest ---------------------------------------------------------------
@dataclass(frozen=True)
class DigestRef(ImageName):
    """An image pinned by digest: `tag` holds the digest (the Engine's pull takes it there), `named`
    the tag CI pulled it as; shown and started as [registry/]repository@sha256:…"""

    named: str = ""

    def __str__(self) -> str:
        return f"{self.pull_repository}@{self.tag}"

    @property
    def plain(self) -> ImageName:
        return ImageName(self.repository, self.named)

    def on(self, registry: str) -> DigestRef:
        return DigestRef(self.repository, self.tag, None if registry in DOCKER_HUB else registry, self.named)


class PinnedPuller(pull.Puller):
    """The pull of ci.pull (LAN mirror bounded by its watchdog, public retried where a retry can
    help, the login), asked for a digest: nothing is retagged, the container starts from repo@digest."""

    def pull_pinned(self, image: ImageName, digest: str) -> pull.PullOutcome:
        """The image at `digest`: present, from the LAN mirror, or from public; one job of the
        host at a time pulls it into this engine (as ci.pull does for a tag)."""
        return self.one_at_a_time(f"{image.repository}@{digest}", lambda started: self._pinned(image, digest, started))

    def _pinned(self, image: ImageName, digest: str, started: float) -> pull.PullOutcome:
        registries = self.config.images.registries
        pinned = DigestRef(image.repository, digest, None, image.tag)
        names = [pinned.on(r) for r in ([registries.lan] if registries.lan else []) + [registries.public]]
        for name in names:
            present = local_image(self.client, name)
            if present is not None:
                self.say(f"{name} is already present locally")
                return pull.PullOutcome(name, pull.PullSource.LOCAL, None, digest, present.size, time.monotonic() - started, 0)
        self.login_public()
        if registries.lan:
            lan = names[0]
            if self.lan_attempt(lan):
                pulled = local_image(self.client, lan)
                if pulled is not None and pulled.has_digest(digest):
                    return pull.PullOutcome(lan, pull.PullSource.LAN, lan.registry, digest, pulled.size,
                                            time.monotonic() - started, 1)
                self.report_lan_failure(lan, f"the pull ended but no local image has {digest}")
        public = names[-1]
        attempts = self.retried_public_pull(public)
        pulled = local_image(self.client, public)
        if pulled is None or not pulled.has_digest(digest):
            raise ToolFailure(f"pulled {public} but no local image has {digest}")
        return pull.PullOutcome(public, pull.PullSource.PUBLIC, public.registry or "docker.io", digest, pulled.size,
                                time.monotonic() - started, attempts)


def pinned_pull(record: Record, out: TextIO) -> Callable[..., pull.PullOutcome]:
    """What run_stage calls for the image (StageOptions.pull_image): the record's digest, LAN first;
    a report without a digest falls back to its tag (said before, in the comparison)."""
    def pull_it(config: Config, client, env: Mapping[str, str], arch, image, rocm, today) -> pull.PullOutcome:
        if not record.digest:
            return pull.pull_image(config, client, env, arch, record.image, None, today)
        puller = PinnedPuller(config, client, env, out)
        outcome = puller.pull_pinned(parse_image_name(record.image), record.digest)
        puller.say(outcome.summary())
        return outcome

    return pull_it


# --- the session ---------------------------------------------------------------------------------
def check_flags(args: Any) -> None:
    """--replay takes what the report fixes; the replay-only flags need --replay."""
    if args.replay is None:
        given = [f"--{name}" for name in REPLAY_FLAGS if getattr(args, name, None)]
        if given:
            raise UserError(f"{given[0]} needs --replay PATH_OR_URL (it picks units of a report)")
        return
    for name in FIXED_BY_REPORT:
        value = getattr(args, name, None)
        if value is not None and value is not False:  # given (0 is given: `--retries 0`)
            raise UserError(f"--{name.replace('_', '-')} cannot be used with --replay: the report fixes it "
                            f"(allowed with --replay: {ALLOWED})")


def replay_session(stage: str, runner_arch: str, args: Any, skip: Callable[[str], None], env: Mapping[str, str],
                   workspace: Path, today: dt.date, out: TextIO | None = None) -> int:
    """The nox door's --replay (ci.commands.stage_session): this parametrization runs when
    runner_arch is the report's arch, and skips otherwise."""
    check_flags(args)
    return replay_report(args.replay, stage=stage, runner_arch=runner_arch, skip=skip, only=args.only or (),
                         failed=args.failed, force=args.force, dry_run=args.dry_run,
                         report_dir=Path(args.report_dir) if args.report_dir else None,
                         env=env, workspace=workspace, today=today, out=out)


def replay_report(given: str, *, env: Mapping[str, str], workspace: Path, today: dt.date, out: TextIO | None = None,
                  stage: str | None = None, runner_arch: str | None = None, skip: Callable[[str], None] | None = None,
                  only: Sequence[str] = (), failed: bool = False, force: bool = False, dry_run: bool = False,
                  report_dir: Path | None = None, probe: Callable[[Config], DeviceReport | None] = probe_device,
                  vram: Callable[[float], tuple[str, list] | None] = read_vram) -> int:
    """Replay the report `given` names (a path, a report folder or an http(s) URL); the exit code
    is the replayed stage's."""
    out = out or sys.stdout
    base = load_config(env=env)
    record, source = replay.load(given, workspace, base.replay)
    if stage is not None and base.stage(stage).name != record.stage:
        raise UserError(f"--replay {given}: a report of {record.stage}, not {base.stage(stage).name}: "
                        f"run `nox -s {record.session} -- --replay {given}`")
    if record.arch not in base.arches:
        raise UserError(f"--replay {given}: its arch {record.arch!r} is not one this toolkit knows "
                        f"(allowed: {', '.join(base.arches)})")
    if runner_arch is not None and runner_arch != record.arch:
        if skip is not None:
            skip(f"runner_arch {runner_arch} is not the report's arch {record.arch}")
        return 0
    if not record.image:
        raise UserError(f"--replay {given}: the report of {record.label} pulled no image: nothing ran")
    units = select(record, only, failed)
    box = look_at_box(base, env, workspace, probe, vram)
    comparisons = compare(record, box)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    jobs = ", ".join(f"{j.suite}: " + (f"partition {j.partition}/{j.partitions}" if j.partition else
                                        f"every partition of {j.partitions}") for j in record.jobs)
    say(f"replay: {record.label} ({jobs}) from {source}, written {record.created}" +
        (f" by {record.run_url}" if record.run_url else ""))
    say(f"replay: CI ran it on {record.arch} ({record.product}, {record.gfx}) with {record.gpus} GPU(s) in "
        f"{record.image}{'@' + record.digest if record.digest else ''}, toolkit {record.toolkit.shown}, "
        f"test tree {record.tree.shown}")
    for comparison in comparisons:
        say(comparison.line(force))
    refused = [c for c in comparisons if c.verdict is Verdict.REFUSED]
    if refused and not force:
        raise UserError(f"replay refused: {'; '.join(f'{c.what}: {c.detail}' for c in refused)} "
                        "(a run here would not reproduce the job; --force runs it anyway)")
    which = ("--failed (failed, timed out or flaky in the report)" if failed else
             "--only" if only else "all")
    say(f"replay: units: {len(units)} of {len(record.units)}, {which}, in the recorded order: "
        + ", ".join(f"{u.name} ({u.status.value})" for u in units))
    say(f"replay: settings as recorded: retries {record.retries}, "
        f"{'continue on error' if record.continue_on_error else 'fail-fast'}, stage timeout "
        f"{record.stage_timeout_s / 60:g} min, per-file timeouts "
        f"{', '.join(sorted({f'{u.timeout_s:g} s' for u in units}))}, {len(record.known_issues)} known issue(s), "
        f"{len(record.thresholds)} bound(s), {len(record.env)} env variable(s)")
    target = report_dir or workspace / base.container.reports_dir / f"replay-{record.label}"
    if not dry_run:
        container_path(workspace, target, base.container.workdir)  # under the workspace, before anything is made
        try:
            check_output_dir(target)
        except InputProblem as problem:
            raise UserError(f"--report-dir {target}: {problem}") from None
    with tempfile.TemporaryDirectory(prefix="sgl-ci-replay-") as scratch:
        folder = Path(scratch) if dry_run else target
        folder.mkdir(parents=True, exist_ok=True)
        override = folder / OVERRIDE_FILE
        override.write_text(yaml.safe_dump(settings_override(record, base, _base_override(env)), sort_keys=False))
        run_env = {**env, OVERRIDE_ENV: str(override)}
        try:
            config = load_config(env=run_env)
        except UserError as exc:
            raise UserError(f"the report's settings do not load as config here ({exc})") from None
        notes = [f"replay of {source} ({which}; CI ran toolkit {record.toolkit.shown}, test tree {record.tree.shown})",
                 *(c.line(force).removeprefix("replay: ") for c in comparisons if c.verdict is not Verdict.SAME)]
        plan = replay_plan(config, record, units, workspace, source, notes)
        check_files(plan, record, box)
        for line in env_differences(record, config, run_env):
            say(f"replay: env DIFFERS: {line}")
        pin = f"{record.image}@{record.digest}" if record.digest else record.image
        if dry_run:
            where = f"{config.images.registries.lan} (LAN), then " if config.images.registries.lan else ""
            say(f"replay: dry run: would pull {pin} from {where}{config.images.registries.public}, then run:")
            files = planned_files(config, plan, workspace)  # what the runner would get
            for index, file in enumerate(files, 1):
                what = " ".join(file.argv) if file.style == "command" else " ".join(file.selectors)
                say(f"replay:   [{index}/{len(files)}] {file.path} ({file.style}, timeout {file.timeout_s:g} s"
                    f"{': ' + what if what else ''})")
            say(f"replay: reports would go to {target}")
            return 0
        say(f"replay: pulling {pin} by digest; reports in {target}")
        options = StageOptions(workspace=workspace, report_dir=target, retries=record.retries,
                               continue_on_error=record.continue_on_error, pull_image=pinned_pull(record, out))
        return run_stage(config, plan, options, run_env, today, out)

