"""`invoke build-image`: the nightly publish's build step. Builds SGLang's ROCm Dockerfile through
the engine with the arch's build args, tags it as today's nightly (named after the newest release
tag of the checkout's remote, unless config overrides the version), pushes it to the public
registry (login through the SDK), and writes the tag to $GITHUB_OUTPUT for the mirror job. The image
is labelled with its kernel sources' fingerprint, so a job can skip rebuilding unchanged kernels."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import docker
import docker.errors

from ci import github, install, publish
from ci.config import ArchSpec, Config
from ci.errors import ToolFailure, UserError
from ci.images import ImageName, check_rocm, nightly_tag
from ci.pull import Puller
from ci.tags import TagListError, git_remote_tags
from ci.versions import newest_release


def release_version(config: Config, workspace: Path) -> tuple[str, str]:
    """The SGLang version the nightly is named after, and where it came from: the first of the
    `versions` override, else the newest release tag of the checkout's remote (one
    `git ls-remote --tags`, no fetch; SGLang's own version comes from those tags)."""
    images = config.images
    if images.versions:
        return images.versions[0], "the versions override in config"
    remote = images.discovery.git_remote
    try:
        names = git_remote_tags(workspace, remote, images.discovery.git_timeout_s)
    except TagListError as failure:
        raise UserError(f"cannot tell the SGLang version for the image name: {failure.message}; "
                        "no versions override in config (images.versions)") from None
    newest = newest_release(names)
    if newest is None:
        raise UserError(f"cannot tell the SGLang version for the image name: no release tag (e.g. v0.5.10) among the "
                        f"{len(names)} tag(s) of {remote} in {workspace}; no versions override in config (images.versions)")
    return newest, f"the newest release tag of {remote} (git ls-remote)"


def nightly_name(config: Config, arch: ArchSpec, rocm: str, today: dt.date, version: str) -> ImageName:
    images = config.images
    return ImageName(images.repository, nightly_tag(images, version, rocm, arch.image_arch, today))


def build_image(config: Config, client: docker.DockerClient, env: Mapping[str, str], arch: ArchSpec,
                rocm: str | None, workspace: Path, today: dt.date, push: bool = True) -> ImageName:
    rocm = check_rocm(config.images, rocm)
    spec = config.images.build
    context = (workspace / spec.context).resolve()
    dockerfile = context / spec.dockerfile
    if not dockerfile.is_file():
        raise UserError(f"no Dockerfile at {dockerfile} (config images.build.dockerfile, relative to the context {context})")
    version, source = release_version(config, workspace)
    name = nightly_name(config, arch, rocm, today, version)
    fields = {"gfx": arch.gfx, "rocm": rocm, "version": version, "image_arch": arch.image_arch}
    args = {key: value.format(**fields) for key, value in spec.args.items()}
    labels = install.kernel_labels(config.install, workspace)
    puller = Puller(config, client, env)
    puller.say(f"version {version}: {source}")
    puller.say(f"building {name} from {dockerfile} with {', '.join(f'{k}={v}' for k, v in args.items())}")
    try:
        for event in client.api.build(path=str(context), dockerfile=str(dockerfile.relative_to(context)), tag=str(name),
                                      buildargs=args, labels=labels, decode=True, rm=True, network_mode="host"):
            if event.get("error") or event.get("errorDetail"):  # build errors arrive inside the stream
                raise ToolFailure(f"build of {name} failed: {event.get('error') or event['errorDetail'].get('message')}")
            text = event.get("stream", "").rstrip()
            if text:
                puller.say(text)
    except docker.errors.APIError as exc:
        raise ToolFailure(f"build of {name} failed: {exc.explanation}") from None
    if push:
        puller.login_public()
        public = name.on(config.images.registries.public)
        if public.registry:
            client.api.tag(str(name), public.pull_repository, public.tag)
        digest = publish.push(client, public)
        puller.say(f"pushed {public} digest={digest}")
    github.write_outputs({"image": str(name)}, env)
    return name
