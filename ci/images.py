"""Image names and nightly tag candidates (pure): rocm/sgl-dev:<version>-<rocm>-<arch>-<YYYYMMDD>."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from ci.config import ArchSpec, ImageConfig
from ci.errors import UserError

DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_NAME = re.compile(r"^(?:(?P<registry>[^/]+[.:][^/]*|localhost|\[[^/]+\](?::\d+)?)/)?(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$")


@dataclass(frozen=True)
class ImageName:
    repository: str  # e.g. rocm/sgl-dev
    tag: str
    registry: str | None = None  # None: the plain name, as the tests and scripts refer to it

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}" if self.registry else f"{self.repository}:{self.tag}"

    @property
    def plain(self) -> "ImageName":
        return ImageName(self.repository, self.tag)

    def on(self, registry: str) -> "ImageName":
        """The same image on another registry; Docker Hub is spelled without a registry part."""
        return ImageName(self.repository, self.tag, None if registry in DOCKER_HUB else registry)

    @property
    def pull_repository(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository


def parse_image_name(text: str) -> ImageName:
    match = _NAME.match(text.strip())
    if not match or "@" in text:
        raise UserError(f"{text!r} is not an image name (allowed: [registry/]repository:tag, e.g. rocm/sgl-dev:TAG)")
    registry = match.group("registry")
    return ImageName(match.group("repo"), match.group("tag") or "latest", None if registry in DOCKER_HUB else registry)


def check_rocm(images: ImageConfig, rocm: str | None) -> str:
    rocm = rocm or images.rocm
    if rocm not in images.rocm_versions:
        raise UserError(f"unknown ROCm version {rocm!r} (allowed: {', '.join(images.rocm_versions)})")
    return rocm


def candidate_images(images: ImageConfig, arch: ArchSpec, today: dt.date, rocm: str | None = None) -> tuple[ImageName, ...]:
    """Tags for today and `lookback_days - 1` days back, newest date first, then newest version."""
    rocm = check_rocm(images, rocm)
    return tuple(
        ImageName(
            images.repository,
            images.tag_format.format(
                version=version,
                rocm=rocm,
                image_arch=arch.image_arch,
                date=(today - dt.timedelta(days=back)).strftime(images.date_format),
            ),
        )
        for back in range(images.lookback_days)
        for version in images.versions
    )
