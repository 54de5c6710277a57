"""invoke tasks: a menu over the ci library. Each task parses its arguments and calls one function."""

import sys

from invoke import task


def _run(command: str, *args, **kwargs) -> None:
    """Import the library only when a task runs: `invoke --list` and `--help` load none of it."""
    from ci import cli, commands

    cli.run(getattr(commands, command), *args, **kwargs)


def _after_dashes() -> list[str]:
    """The words after `--` exactly as typed (invoke's c.remainder joins them and loses quoting)."""
    from ci import cli

    return cli.argv_after_dashes(sys.argv)


@task(help={"event": "pull_request | schedule | workflow_dispatch | workflow_call",
            "runner_arch": "the workflow's runner_arch input (dispatch/call only)",
            "cadence": "per-commit (default) or nightly stages",
            "durations": "durations store for partitions (missing or corrupt: est_time, with a warning)",
            "target": "comma-separated stages or suites to run (dispatch); others are skipped",
            "labels": "comma-separated pull request labels (stage labels, the fast-fail bypass)",
            "changes_since": "git revision to diff HEAD against for change detection (pull requests)",
            "run_all": "skip change detection and label gates",
            "continue_on_error": "keep going after a failed file"})
def route(c, event, runner_arch=None, cadence="per-commit", durations=None, target=None, labels=None,
          changes_since=None, run_all=False, continue_on_error=False):
    """Print the label, timeout, partitions and run/skip of every job; write $GITHUB_OUTPUT in Actions."""
    _run("route_command", event=event, runner_arch=runner_arch, cadence=cadence, durations=durations,
            target=target, labels=labels, changes_since=changes_since, run_all=run_all,
            continue_on_error=continue_on_error)


@task
def finish(c):
    """The workflow's last job: read every job's result ($NEEDS_JSON) and fail if one failed."""
    _run("finish_command")


@task(help={"event": "route as this GitHub event", "arch": "runner arch (default: detected)",
            "stage": "one stage (default: all)", "image": "image override", "rocm": "ROCm version",
            "durations": "durations store (or run record) to plan on", "markdown": "Markdown with partition charts"})
def plan(c, event=None, arch=None, stage=None, image=None, rocm=None, durations=None, markdown=False):
    """Print what a run would do: arch and how it was found, labels, images, timeouts. No Docker."""
    _run("plan_command", event=event, arch=arch, stage=stage, image=image, rocm=rocm, durations=durations,
            markdown=markdown)


@task(positional=["action"], iterable=["from_"],
      help={"action": "update | report", "from_": "a folder of run records (durations.json); repeat for more",
            "store": "the store file (default: config durations.store_path)", "arch": "report: one arch",
            "suite": "report: one suite", "markdown": "report: Markdown with a chart (and to the step summary)"})
def durations(c, action, from_=None, store=None, arch=None, suite=None, markdown=False):
    """The durations history: `update --from DIR...` merges run records; `report` shows drift."""
    _run("durations_command", action, sources=from_ or (), store=store, arch=arch, suite=suite,
            markdown=markdown)


@task(name="pull-image", help={"arch": "runner arch (default: detected)", "rocm": "ROCm version of the nightly",
                               "image": "pull this image; skips nightly resolution"})
def pull_image(c, arch=None, image=None, rocm=None):
    """Pull the CI image: newest nightly for the arch, LAN mirror first, public with retries."""
    _run("pull_image_command", arch=arch, image=image, rocm=rocm)


@task(name="mirror-image", help={"arch": "runner arch (default: detected)", "rocm": "ROCm version of the nightly",
                                 "image": "mirror this image; skips nightly resolution"})
def mirror_image(c, arch=None, image=None, rocm=None):
    """Mirror the nightly image to the LAN registry (LOCAL_DOCKER_REGISTRY) and verify its digest."""
    _run("mirror_image_command", arch=arch, image=image, rocm=rocm)


@task(name="start-container", help={"arch": "runner arch (default: detected)", "variant": "default | disagg",
                                    "image": "image (default: newest nightly, pulled LAN first)",
                                    "gpu_clean": "run GPU hygiene first (default: yes)"})
def start_container(c, arch=None, variant="default", image=None, gpu_clean=True):
    """Start the CI container with the ROCm devices, groups, mounts and env from config."""
    _run("start_container_command", arch=arch, variant=variant, image=image, gpu_clean=gpu_clean)


@task(name="exec", help={"arch": "runner arch (default: detected)"})
def exec_(c, arch=None):
    """Run the command after -- in the CI container with the CI env; exits with its exit code."""
    _run("exec_command", _after_dashes(), arch=arch)  # c.remainder loses quoting


@task(name="stop-container")
def stop_container(c):
    """Stop the CI container: SIGINT to its processes, a grace period, stop, remove."""
    _run("stop_container_command")


@task(name="gpu-clean")
def gpu_clean(c):
    """Stop stale GPU containers, kill processes holding GPU devices, check VRAM."""
    _run("gpu_clean_command")


@task(name="kernel-tests", help={"arch": "runner arch (default: detected)",
                                 "host": "run on this host instead of in the container",
                                 "install": "install the checkout in the container first (default: yes)"})
def kernel_tests(c, arch=None, host=False, install=True):
    """pytest on sgl_kernel_tests/ with arch-aware known issues and JUnit XML; -- passes pytest args."""
    _run("kernel_tests_command", _after_dashes(), arch=arch, host=host, install=install)


@task(help={"arch": "runner arch (default: detected)", "suite": "the job whose GPU count is wanted (stages.yaml)",
            "gpus": "GPUs the job needs (default: the suite's, else 1)"})
def preflight(c, arch=None, suite=None, gpus=None):
    """Is this machine fit to run a job: GPUs, leaked VRAM, ECC/RAS, disk, reachability (exit 3 if not)."""
    _run("preflight_command", arch=arch, suite=suite, gpus=gpus)


@task(name="verdict", help={"failure_class": "the stage step's failure_class output"})
def verdict(c, failure_class=""):
    """Exit with the code of a stage's failure class (the workflow's step after a stage it did not retry)."""
    _run("verdict_command", failure_class=failure_class)


@task(name="install-deps", iterable=["skip"],
      help={"arch": "runner arch (default: the container's)", "skip": "leave out this install step (repeatable)"})
def install_deps(c, arch=None, skip=None):
    """Install the checkout in the CI container (config/install.yaml) and prove the tests import it."""
    _run("install_deps_command", arch=arch, skip=skip)


@task(name="build-image", help={"arch": "runner arch (default: detected)", "rocm": "ROCm version",
                                "push": "push to the public registry (default: yes)"})
def build_image(c, arch=None, rocm=None, push=True):
    """Build today's nightly CI image from SGLang's ROCm Dockerfile and push it."""
    _run("build_image_command", arch=arch, rocm=rocm, push=push)


@task(help={"check": "only check that the committed files equal the rendering",
            "root": "render into (or check) this folder instead of the toolkit"})
def workflows(c, check=False, root=None):
    """Render .github/workflows/ (and the setup action) from config."""
    _run("workflows_command", check=check, root=root)
