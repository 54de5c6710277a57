"""Image names and nightly tag candidates (pure): rocm/sgl-dev:<version>-<rocm>-<arch>-<YYYYMMDD>.

Candidates come either from a versions override in config (every version for every day of the
lookback window, as names to probe) or from a registry's tag list: the tags that match the
configured tag format for this arch and ROCm version within the window, newest first. The tag
format is the one home of the tag's shape: names are built from it and tag lists parsed with a
pattern made from it."""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.version import Version

from ci.config import ArchSpec, ImageConfig
from ci.errors import UserError
from ci.versions import VERSION, date_pattern, date_shown, version_key

IMAGE_ENV = "AMD_CI_IMAGE"  # the old scripts' image override, kept: a workflow input sets it


def image_override(given: str | None, env: Mapping[str, str]) -> str | None:
    """The image a person or workflow named: --image, else $AMD_CI_IMAGE; None: resolve the nightly."""
    return given or env.get(IMAGE_ENV) or None


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
    def plain(self) -> ImageName:
        return ImageName(self.repository, self.tag)

    def on(self, registry: str) -> ImageName:
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
    if not match.group("tag"):
        raise UserError(f"{text!r} has no tag (allowed: [registry/]repository:tag, e.g. rocm/sgl-dev:TAG; "
                        ":latest is never implied, a CI run names the image it tests)")
    return ImageName(match.group("repo"), match.group("tag"), None if registry in DOCKER_HUB else registry)


def check_rocm(images: ImageConfig, rocm: str | None) -> str:
    rocm = rocm or images.rocm
    if rocm not in images.rocm_versions:
        raise UserError(f"unknown ROCm version {rocm!r} (allowed: {', '.join(images.rocm_versions)})")
    return rocm


def nightly_tag(images: ImageConfig, version: str, rocm: str, image_arch: str, day: dt.date) -> str:
    """The one place a nightly's tag is written (`tag_format` with `date_format`): what the build
    tags, the override's candidates, the demo's stand-in."""
    return images.tag_format.format(version=version, rocm=rocm, image_arch=image_arch, date=day.strftime(images.date_format))


def candidate_images(images: ImageConfig, arch: ArchSpec, today: dt.date, rocm: str | None = None) -> tuple[ImageName, ...]:
    """The names to probe for the `versions` override: today and `lookback_days - 1` days back,
    newest date first, then each version in the override's order. Empty with no override."""
    rocm = check_rocm(images, rocm)
    return tuple(
        ImageName(images.repository, nightly_tag(images, version, rocm, arch.image_arch, today - dt.timedelta(days=back)))
        for back in range(images.lookback_days)
        for version in images.versions
    )


# --- tag lists ----------------------------------------------------------------------------
@dataclass(frozen=True)
class NightlyTag:
    tag: str
    version: Version
    date: dt.date
    preview: bool

    @property
    def order(self) -> tuple:
        """Newest date, then newest version, then the non-preview of the same version and date."""
        return (self.date, self.version, not self.preview, self.tag)


def tag_pattern(images: ImageConfig, image_arch: str, rocm: str) -> re.Pattern[str]:
    """`tag_format` as a regular expression for one arch and ROCm version, preview suffix optional."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(images.tag_format):
        parts.append(re.escape(literal))
        if field == "version":
            parts.append(f"(?P<version>{VERSION})")
        elif field == "date":
            parts.append(f"(?P<date>{date_pattern(images.date_format)})")
        elif field == "rocm":
            parts.append(re.escape(rocm))
        elif field == "image_arch":
            parts.append(re.escape(image_arch))
    return re.compile("".join(parts) + f"(?P<preview>{re.escape(images.preview_suffix)})?")


def parse_tag(pattern: re.Pattern[str], date_format: str, tag: str) -> NightlyTag | None:
    """A nightly tag read with `pattern` (from tag_pattern); None for any other tag."""
    match = pattern.fullmatch(tag)
    if not match:
        return None
    version = version_key(match.group("version"))
    try:
        date = dt.datetime.strptime(match.group("date"), date_format).date()
    except ValueError:
        return None
    return None if version is None else NightlyTag(tag, version, date, bool(match.group("preview")))


def matching_tags(images: ImageConfig, arch: ArchSpec, tags: Iterable[str], rocm: str | None = None) -> list[NightlyTag]:
    """Every nightly tag of this arch and ROCm version in `tags`, of any date, newest first.
    Previews are left out unless `use_preview` is set; foreign and malformed tags are ignored."""
    pattern = tag_pattern(images, arch.image_arch, check_rocm(images, rocm))
    found = {tag: parsed for tag in tags if isinstance(tag, str)
             if (parsed := parse_tag(pattern, images.date_format, tag)) and (images.use_preview or not parsed.preview)}
    return sorted(found.values(), key=lambda t: t.order, reverse=True)


def discovered_candidates(images: ImageConfig, arch: ArchSpec, today: dt.date, tags: Iterable[str],
                          rocm: str | None = None) -> tuple[ImageName, ...]:
    """The candidates in a registry's tag list: tags of this arch and ROCm version dated today or
    up to `lookback_days - 1` days back, newest date first, then newest version (v0.5.10 above
    v0.5.9, v0.5.10rc1 below v0.5.10); a preview (when `use_preview` is set) right below the
    non-preview of the same version and date."""
    oldest = today - dt.timedelta(days=images.lookback_days - 1)
    return tuple(ImageName(images.repository, t.tag) for t in matching_tags(images, arch, tags, rocm)
                 if oldest <= t.date <= today)


def tag_shape(images: ImageConfig, arch: ArchSpec, rocm: str | None = None) -> str:
    """What discovery looks for, as people read it: rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD>."""
    rocm = check_rocm(images, rocm)
    tag = images.tag_format.format(version="<version>", rocm=rocm, image_arch=arch.image_arch,
                                   date=f"<{date_shown(images.date_format)}>")
    return f"{images.repository}:{tag}" + (f"[{images.preview_suffix}]" if images.use_preview else "")
