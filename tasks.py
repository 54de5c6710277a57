"""invoke tasks: a menu over the ci library. Each task parses its arguments and calls one function."""

import sys

from invoke import task

from ci import cli, commands


@task(help={"event": "pull_request | schedule | workflow_dispatch | workflow_call",
            "runner_arch": "the workflow's runner_arch input (dispatch/call only)",
            "cadence": "per-commit (default) or nightly stages",
            "durations": "recorded durations file for partitions: auto",
            "target": "comma-separated stages or suites to run (dispatch); others are skipped",
            "labels": "comma-separated pull request labels (stage labels, the fast-fail bypass)",
            "changes_since": "git revision to diff HEAD against for change detection (pull requests)",
            "run_all": "skip change detection and label gates",
            "continue_on_error": "keep going after a failed file"})
def route(c, event, runner_arch=None, cadence="per-commit", durations=None, target=None, labels=None,
          changes_since=None, run_all=False, continue_on_error=False):
    """Print the label, timeout, partitions and run/skip of every job; write $GITHUB_OUTPUT in Actions."""
    cli.run(commands.route_command, event=event, runner_arch=runner_arch, cadence=cadence, durations=durations,
            target=target, labels=labels, changes_since=changes_since, run_all=run_all,
            continue_on_error=continue_on_error)


@task
def finish(c):
    """The workflow's last job: read every job's result ($NEEDS_JSON) and fail if one failed."""
    cli.run(commands.finish_command)


@task(help={"event": "route as this GitHub event", "arch": "runner arch (default: detected)",
            "stage": "one stage (default: all)", "image": "image override", "rocm": "ROCm version"})
def plan(c, event=None, arch=None, stage=None, image=None, rocm=None):
    """Print what a run would do: arch and how it was found, labels, images, timeouts. No Docker."""
    cli.run(commands.plan_command, event=event, arch=arch, stage=stage, image=image, rocm=rocm)


@task(name="pull-image", help={"arch": "runner arch (default: detected)", "rocm": "ROCm version of the nightly",
                               "image": "pull this image; skips nightly resolution"})
def pull_image(c, arch=None, image=None, rocm=None):
    """Pull the CI image: newest nightly for the arch, LAN mirror first, public with retries."""
    cli.run(commands.pull_image_command, arch=arch, image=image, rocm=rocm)


@task(name="mirror-image", help={"arch": "runner arch (default: detected)", "rocm": "ROCm version of the nightly",
                                 "image": "mirror this image; skips nightly resolution"})
def mirror_image(c, arch=None, image=None, rocm=None):
    """Mirror the nightly image to the LAN registry (LOCAL_DOCKER_REGISTRY) and verify its digest."""
    cli.run(commands.mirror_image_command, arch=arch, image=image, rocm=rocm)


@task(name="start-container", help={"arch": "runner arch (default: detected)", "variant": "default | disagg",
                                    "image": "image (default: newest nightly, pulled LAN first)",
                                    "gpu_clean": "run GPU hygiene first (default: yes)"})
def start_container(c, arch=None, variant="default", image=None, gpu_clean=True):
    """Start the CI container with the ROCm devices, groups, mounts and env from config."""
    cli.run(commands.start_container_command, arch=arch, variant=variant, image=image, gpu_clean=gpu_clean)


@task(name="exec", help={"arch": "runner arch (default: detected)"})
def exec_(c, arch=None):
    """Run the command after -- in the CI container with the CI env; exits with its exit code."""
    cli.run(commands.exec_command, cli.argv_after_dashes(sys.argv), arch=arch)  # c.remainder loses quoting


@task(name="stop-container")
def stop_container(c):
    """Stop the CI container: SIGINT to its processes, a grace period, stop, remove."""
    cli.run(commands.stop_container_command)


@task(name="gpu-clean")
def gpu_clean(c):
    """Stop stale GPU containers, kill processes holding GPU devices, check VRAM."""
    cli.run(commands.gpu_clean_command)


@task(name="kernel-tests", help={"arch": "runner arch (default: detected)",
                                 "host": "run on this host instead of in the container"})
def kernel_tests(c, arch=None, host=False):
    """pytest on sgl_kernel_tests/ with arch-aware known issues and JUnit XML; -- passes pytest args."""
    cli.run(commands.kernel_tests_command, cli.argv_after_dashes(sys.argv), arch=arch, host=host)


@task(name="build-image", help={"arch": "runner arch (default: detected)", "rocm": "ROCm version",
                                "push": "push to the public registry (default: yes)"})
def build_image(c, arch=None, rocm=None, push=True):
    """Build today's nightly CI image from SGLang's ROCm Dockerfile and push it."""
    cli.run(commands.build_image_command, arch=arch, rocm=rocm, push=push)


@task(help={"check": "only check that the committed files equal the rendering"})
def workflows(c, check=False):
    """Render .github/workflows/ (and the setup action) from config."""
    cli.run(commands.workflows_command, check=check)
