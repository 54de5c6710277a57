"""`nox -s demo`: the whole CI path on a machine with Docker, no GPU and no internet: throwaway
LAN and stand-in public registries on loopback, a small locally built nightly with an older
sglang baked in, the LAN-first pull, the container, the workspace's python/ installed over the
baked copy (pip --no-index, cache on a data mount) and proven to be what the tests import, a
sample stage registered in SGLang's format (a flaky, a slow, a disabled file, one with an MI300X
known issue, one that checks the sglang version) run in the container, the stop, the reports; then
the report replayed (its flaky file, `--failed`) in the image pulled again by its digest."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TextIO

import docker.errors

from ci import install, registry, replay, reproduce
from ci.arch import ArchResolution
from ci.config import Config, load_config
from ci.images import nightly_tag
from ci.plan import build_plan, load_tree, render_plan
from ci.stage import StageOptions, run_stage
from demo import sandbox

EXAMPLES = Path(__file__).resolve().parent / "examples"
CHECKOUT = Path(__file__).resolve().parent / "checkout"  # python/ and a test-time dependency
BAKED_VERSION = "0.5.9"  # in the nightly image, as a release ships it
CHECKOUT_VERSION = "0.5.10.dev0+demo.checkout"  # in the workspace: the change under test
# The runner's data mount (pip's cache on it), kept between demo runs as a runner keeps its own.
DATA = Path(tempfile.gettempdir()) / "sgl-ci-demo-data"
STAGE = "stage-demo"
SUITE = "stage-demo-test-1-gpu-amd"
DEMO_VERSION = "v0.5.10"  # any release: the pull finds it in the stand-in public registry's tag list

# SGLang's install steps need the internet; these install from the workspace only (pip --no-index).
INSTALL = """install:
  proof: {version_file: python/sglang/version.py}
  retry: {attempts: 3, initial_wait_s: 1, max_wait_s: 2, jitter_s: 0}
  steps:
    - name: remove-image-copy
      timeout_s: 60
      retry: false
      run: [[python3, -m, pip, uninstall, -y, sglang]]
    - name: kernel
      kind: kernel
      kernel: {when: changed, sources: [python/sglang/kernels/aot], image_label: sgl-ci.kernel-sources}
      timeout_s: 60
      run: [[python3, -m, compileall, -q, python/sglang]]
    - name: checkout
      timeout_s: 120
      run: [[python3, -m, pip, install, --no-index, --no-build-isolation, --cache-dir, "{pip_cache}", -e, "python[{extras}]"]]
    - name: test-deps
      timeout_s: 120
      run: [[python3, -m, pip, install, --no-index, --find-links, test-deps, --no-build-isolation, --cache-dir, "{pip_cache}", sgl-demo-eval==1.0]]
    - name: warmup
      timeout_s: 60
      retry: false
      run: [[python3, -m, sglang.warmup]]
"""


def one_stage(stage: str, suite: str, description: str, per_file_timeout_s: int, retries: int) -> str:
    """Override YAML for a stage of one job: the suite on mi300, 1 GPU, 1 partition (the demo's
    stage, and the test stages that run a real container the same way)."""
    return f"""stages:
  {stage}:
    description: {description}
    cadence: per-commit
    needs: []
    suites: [{{suite: {suite}, arches: [mi300], gpus: 1, partitions: 1, per_file_timeout_s: {{default: {per_file_timeout_s}}},
               timeout_minutes: {{default: 10}}, variant: default, label_suffix: "", changes: always}}]
    retries: {retries}
    kill_grace_s: 1
    hard_deadline_margin_s: 120
    job_setup_minutes: 30
    budget_share: 0.8
    max_partitions: 4
    pr_label: ""
"""


NIGHTLY_ENV = {"GPU_ARCH": "gfx942", "PIP_BREAK_SYSTEM_PACKAGES": "1"}  # a stamped image; pip may write its site

OVERRIDE = """# Written by `nox -s demo`: the shipped config, adjusted for a box with no GPU.
images:
  registries: {{lan: {lan}, public: {public}}}
container:
  name: ci_sglang_demo
  network: none
  mounts:
    - {{source: $WORKSPACE, target: /sglang-checkout}}
    - {{source: $TOOLKIT, target: /sgl-ci, read_only: true}}
    - {{source: {data}, target: /sgl-data}}
  devices: [{{path: /dev/kfd, optional: true}}]
  render_devices_fallback: {{path: /dev/dri, optional: true}}
  ulimits: {{nofile: [{nofile}, {nofile}]}}
  stop: {{sigint_grace_s: 3, stop_timeout_s: 5}}
  hygiene: {{device_globs: ['{root}/no-gpu/kfd'], rounds: 1}}
{stages}known_issues:
  - test: "*test_sampling.py::*test_greedy"
    arches: [mi300]
    mode: skip
    reason: greedy decoding is not bit-identical across runs on MI300X
    link: https://github.com/sgl-project/sglang/pull/23156
    expires: 2027-03-31
health:
  # No GPU here: the GPU checks say what they see without failing; disk and the (loopback)
  # registries are checked for real.
  checks: {{gpus: "off", leaked_vram: warn, ecc: warn, disk: fail, reachability: fail}}
  disk: [{{path: $DOCKER_ROOT, min_free_gib: 1}}, {{path: $WORKSPACE, min_free_gib: 1}}]
  endpoints: []
{install}thresholds:
  test_demo_throughput:
    output_throughput: {{kind: min, unit: tok/s, default: 1500, arch: {{mi300: 1000}}}}
    avg_latency_ms: {{kind: max, unit: ms, default: 50, amd: 60}}
"""


def _push(client, source: str, target_repository: str, tag: str) -> None:
    client.images.get(source).tag(target_repository, tag)
    for event in client.api.push(target_repository, tag, stream=True, decode=True):
        if event.get("error"):
            raise RuntimeError(event["error"])
    client.images.remove(f"{target_repository}:{tag}")


def write_checkout(root: Path, version: str) -> Path:
    """A stand-in SGLang checkout: python/ with sglang at `version`, and a test-time dependency
    packed as an sdist under test-deps/."""
    shutil.copytree(CHECKOUT / "python", root / "python")
    (root / "python" / "sglang" / "version.py").write_text(f'__version__ = "{version}"\n')
    (root / "test-deps").mkdir()
    _sdist(CHECKOUT / "test-deps" / "sgl_demo_eval", root / "test-deps" / "sgl_demo_eval-1.0.tar.gz")
    return root


def nightly_image(client, base: str, scratch: Path, config: Config) -> str:
    """The nightly stand-in: `base` with sglang BAKED_VERSION pip-installed, stamped GPU_ARCH=gfx942
    and labelled with its kernel sources' fingerprint as `invoke build-image` labels one."""
    baked = write_checkout(scratch / "baked", BAKED_VERSION)
    return sandbox.baked_image(client, base, baked / "python", "sgl-ci-test/sglang-nightly", NIGHTLY_ENV,
                               install.kernel_labels(config.install, baked))


def _sdist(source: Path, target: Path) -> None:
    """A byte-identical archive on every run, as an index serves one: pip reuses the wheel it
    cached for it only when the archive's hash is the one it built from."""
    def fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    top = target.name.removesuffix(".tar.gz")
    with target.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as sdist:
        for path in sorted([source, *source.rglob("*")]):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(source).as_posix()
            sdist.add(path, arcname=top if relative == "." else f"{top}/{relative}", recursive=False, filter=fixed)


def _commit(workspace: Path) -> str:
    """Make the workspace a git checkout with one commit, as actions/checkout leaves it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(workspace), "-c", "user.name=sgl-ci demo", "-c",
                               "user.email=demo@localhost", *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "the change under test")
    return git("rev-parse", "HEAD").strip()


def run_demo(out: TextIO = sys.stdout) -> int:
    def say(line: str) -> None:
        print(f"[demo] {line}", file=out, flush=True)

    client = registry.connect(60)
    root = Path(tempfile.mkdtemp(prefix="sgl-ci-demo-"))
    lan = sandbox.start_registry(root / "lan")
    public = sandbox.start_registry(root / "public")
    today = dt.datetime.now(dt.timezone.utc).date()
    shipped = load_config(env={})
    version = shipped.images.versions[0] if shipped.images.versions else DEMO_VERSION
    tag = nightly_tag(shipped.images, version, shipped.images.rocm, shipped.arches["mi300"].image_arch, today)
    image = f"{shipped.images.repository}:{tag}"
    try:
        say(f"registries on loopback: LAN {lan.address}, public {public.address}")
        say("test image: Debian with Python, pip and pytest (built once with debootstrap, then reused)")
        base = sandbox.python_image(client)
        nightly = nightly_image(client, base, root, shipped)
        say(f"nightly stand-in {nightly}: sglang {BAKED_VERSION} installed in the image, GPU_ARCH=gfx942")
        for reg in (lan, public):
            _push(client, nightly, f"{reg.address}/{shipped.images.repository}", tag)
        sandbox.drop_tag(client, shipped.images.repository, tag)
        say(f"published {image} to both registries")

        workspace = write_checkout(root / "workspace", CHECKOUT_VERSION)
        tests = workspace / shipped.suites.test_root
        tests.mkdir(parents=True)
        for example in EXAMPLES.glob("*.py"):
            shutil.copy(example, tests / example.name)
        override = workspace / "ci-demo-config.yaml"
        nofile = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        DATA.mkdir(exist_ok=True)
        override.write_text(OVERRIDE.format(lan=lan.address, public=public.address, root=root, nofile=nofile, data=DATA,
                                            stages=one_stage(STAGE, SUITE, "the demo's stage", 60, 1), install=INSTALL))
        commit = _commit(workspace)
        say(f"workspace {workspace}: python/ has sglang {CHECKOUT_VERSION}, committed as {commit[:12]}")
        env = {**os.environ, "SGL_CI_CONFIG_OVERRIDE": str(override), "GITHUB_WORKSPACE": str(workspace),
               "LOCAL_DOCKER_REGISTRY": lan.address, "PUBLIC_DOCKER_REGISTRY": public.address}
        for secret in ("DOCKERHUB_AMD_USERNAME", "DOCKERHUB_AMD_TOKEN"):
            env.pop(secret, None)
        config = load_config(env=env)
        resolution = ArchResolution(config.arch("mi300"), "the demo's --arch mi300")
        plan = build_plan(config, STAGE, resolution, today, load_tree(config, tests))
        for line in render_plan(plan):
            say(line)
        report_dir = workspace / config.container.reports_dir / STAGE
        code = run_stage(config, plan, StageOptions(workspace, report_dir, config.stage(STAGE).retries, False), env, today, out)
        say(f"summary ({report_dir / 'summary.md'}):")
        print((report_dir / "summary.md").read_text(), file=out, flush=True)
        replayed = _replay(client, shipped.images.repository, tag, report_dir, env, workspace, today, say, out)
        say(f"workspace kept for a look: {workspace}")
        return code or replayed
    finally:
        lan.stop()
        public.stop()
        sandbox.drop_tag(client, shipped.images.repository, tag)
        for image in client.images.list(name=f"*/{shipped.images.repository}"):  # the replay's pin by digest
            for name in image.attrs.get("RepoDigests") or []:
                if name.startswith((f"{lan.address}/", f"{public.address}/")):
                    _forget(client, name)


def _forget(client, name: str) -> None:
    try:
        client.images.remove(name)
    except docker.errors.APIError:  # in use elsewhere, or gone already
        pass


def _replay(client, repository: str, tag: str, report_dir: Path, env: dict, workspace: Path, today: dt.date,
            say, out: TextIO) -> int:
    """The report's own replay: its failed or flaky file(s) again, in the image pulled by digest."""
    record, _ = replay.load(str(report_dir), workspace, load_config(env=env).replay)
    sandbox.drop_tag(client, repository, tag)
    say(f"the local copy of {repository}:{tag} removed, as on a box that never pulled it")
    say(f"replaying: {record.command} --failed  (with this demo's GITHUB_WORKSPACE and SGL_CI_CONFIG_OVERRIDE)")
    code = reproduce.replay_report(str(report_dir), failed=True, env=env, workspace=workspace, today=today, out=out)
    target = workspace / load_config(env=env).container.reports_dir / f"replay-{record.label}"
    summary = (target / "summary.md").read_text().rstrip("\n").splitlines()
    say(f"replay reports: {target}; its summary ends with: {summary[-1]}")
    return code

