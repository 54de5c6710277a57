"""Release versions and dates as they appear in image tags and git tags (pure, imports nothing
from ci): the version pattern, the version order, and date formats turned into patterns.

Versions compare as PEP 440 versions (SGLang's come from git tags through setuptools-scm), so
v0.5.10 > v0.5.9 and a release candidate sorts below its release: v0.5.10rc1 < v0.5.10."""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.version import InvalidVersion, Version

# A version in a tag: an optional v, a digit, then what a Docker tag allows except '-' (the
# separator of the tag's parts). PEP 440 then decides whether it is a version at all.
VERSION = r"v?[0-9][A-Za-z0-9_.]*"
_VERSION = re.compile(VERSION)

# strftime directives a date in a tag may use, as patterns and as shown to people.
_DATE_CODES = {"Y": (r"[0-9]{4}", "YYYY"), "y": (r"[0-9]{2}", "YY"), "m": (r"[0-9]{2}", "MM"),
               "d": (r"[0-9]{2}", "DD"), "j": (r"[0-9]{3}", "DDD")}


def version_key(text: str) -> Version | None:
    """The order of a release version; None when `text` is not one."""
    if not _VERSION.fullmatch(text):
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def newest_release(names: Iterable[str]) -> str | None:
    """The newest release version among `names` (git tags, say); others are ignored."""
    keyed = [(key, name) for name in names if (key := version_key(name)) is not None]
    return max(keyed)[1] if keyed else None


def _date_parts(date_format: str) -> list[tuple[str, str]]:
    parts, index = [], 0
    while index < len(date_format):
        char = date_format[index]
        if char != "%":
            parts.append((re.escape(char), char))
            index += 1
            continue
        code = date_format[index + 1:index + 2]
        if code == "%":
            parts.append(("%", "%"))
        elif code in _DATE_CODES:
            parts.append(_DATE_CODES[code])
        else:
            raise ValueError(f"%{code} is not allowed in a tag's date (allowed: "
                             f"{', '.join('%' + c for c in _DATE_CODES)}, %%)")
        index += 2
    return parts


def date_pattern(date_format: str) -> str:
    """A regular expression for dates written with `date_format` (strptime then checks them)."""
    return "".join(pattern for pattern, _ in _date_parts(date_format))


def date_shown(date_format: str) -> str:
    """`date_format` as people read it: %Y%m%d -> YYYYMMDD."""
    return "".join(shown for _, shown in _date_parts(date_format))
