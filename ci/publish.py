"""Publishing images: the push through the engine (verified by the digest it reports) and the
nightly mirror to the LAN registry (public pull, retag, push, digests compared)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping

import docker
import docker.errors

from ci.config import ArchSpec, Config
from ci.errors import ToolFailure, UserError
from ci.images import ImageName
from ci.pull import Candidates, Puller, target_image
from ci.registry import local_image, tag, untag


def push(client: docker.DockerClient, name: ImageName) -> str:
    """Push through the engine; errors inside the stream are errors; returns the pushed digest."""
    digest = None
    try:
        for event in client.api.push(name.pull_repository, name.tag, stream=True, decode=True):
            if event.get("error") or event.get("errorDetail"):
                raise ToolFailure(f"push of {name} failed: {event.get('error') or event['errorDetail'].get('message')}")
            digest = (event.get("aux") or {}).get("Digest", digest)
    except docker.errors.APIError as exc:
        raise ToolFailure(f"push of {name} failed: {exc.explanation}") from None
    if not digest:
        raise ToolFailure(f"push of {name} reported no digest")
    return digest


def mirror(puller: Puller, image: ImageName) -> str:
    """Pull from public, retag to the LAN registry, push, and verify the pushed digest."""
    config, client = puller.config, puller.client
    lan_registry = config.images.registries.lan
    if not lan_registry:
        raise UserError("mirror-image needs a LAN registry: set LOCAL_DOCKER_REGISTRY")
    image = image.plain
    public = image.on(config.images.registries.public)
    puller.login_public()
    source_digest = puller.public_digest(public)
    present = local_image(client, image)
    if not (present and source_digest and present.has_digest(source_digest)):
        puller.pull_public(image, public, source_digest, time.monotonic())
    if not source_digest:
        local = local_image(client, image) or present
        if local is None:
            raise ToolFailure(f"mirror of {image}: the engine no longer has it after the pull (removed meanwhile?)")
        source_digest = local.digest_for(public.pull_repository)
    lan = image.on(lan_registry)
    tag(client, image, lan)
    try:
        pushed = push(client, lan)
    finally:
        untag(client, lan)
    if source_digest and pushed != source_digest:
        raise ToolFailure(f"mirror of {image} to {lan_registry} has digest {pushed}, source has {source_digest}")
    puller.say(f"mirrored {image} to {lan} digest={pushed} (matches the source)" if source_digest
               else f"mirrored {image} to {lan} digest={pushed} (source digest unknown)")
    return pushed


def mirror_image(config: Config, client: docker.DockerClient, env: Mapping[str, str], arch: ArchSpec | None,
                 image: str | None, rocm: str | None, today: dt.date, candidates: Candidates | None = None) -> str:
    """`invoke mirror-image`: the nightly publish's push to the LAN registry, verified by digest."""
    puller = Puller(config, client, env)
    return mirror(puller, target_image(puller, arch, image, rocm, today, candidates))
