"""Secrets: which environment variables hold them, masking them in GitHub Actions before any other
output, and scrubbing their values (raw, JSON-escaped, base64 at any alignment) from text we write.
Stdlib only: the stage runner imports it inside the CI container."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import BinaryIO, TextIO

# Every environment variable the toolkit reads that holds a secret: the public registry's login
# token and the Hugging Face token passed into the container. config/container.yaml's secret_env
# may only name these (checked at load), so masking never depends on config loading.
SECRET_ENV = ("DOCKERHUB_AMD_TOKEN", "HF_TOKEN")
SHOWN = "***"
# Shorter values are not scrubbed: a three-letter "secret" would blank out ordinary words, and
# base64 fragments this short match by chance. Real tokens are tens of characters.
MIN_SCRUB_LENGTH = 6
_masked_in_process: set[str] = set()


def values(env: Mapping[str, str], names: Iterable[str] = SECRET_ENV) -> list[str]:
    """The secret values present in `env` (each at most once, longest first)."""
    found = {env[name] for name in names if env.get(name)}
    return sorted(found, key=len, reverse=True)


def exec_secrets(names: Iterable[str], env: Mapping[str, str]) -> dict[str, str]:
    """name -> value of the secrets named in config that `env` holds (what an exec is given)."""
    return {name: env[name] for name in names if env.get(name)}


def mask_all(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> None:
    """Register every secret with the Actions log masker (`::add-mask::`), once per process.
    Called by the door before the command prints anything."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") != "true":
        return
    out = stream or sys.stdout
    for value in values(env):
        for form in [value, *_escaped_forms(value)]:
            for line in form.splitlines() or [form]:
                if line and line not in _masked_in_process:
                    print(f"::add-mask::{line}", file=out, flush=True)
                    _masked_in_process.add(line)


def _escaped_forms(value: str) -> list[str]:
    """How a value looks once JSON-escaped, when that differs from the raw value."""
    escaped = json.dumps(value)[1:-1]
    ascii_escaped = json.dumps(value, ensure_ascii=True)[1:-1]
    return [form for form in dict.fromkeys((escaped, ascii_escaped)) if form != value]


def _base64_cores(value: str) -> list[str]:
    """The part of base64(…value…) that only the value's bytes decide, for each of the three byte
    alignments the value can have inside a longer encoded blob (a Basic auth header, Docker's
    X-Registry-Auth JSON), in both alphabets."""
    raw = value.encode("utf-8")
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        start = 4 * -(-shift // 3)  # the first whole group of value bytes only
        end = 4 * ((shift + len(raw)) // 3)  # the last whole group of value bytes only
        core = encoded[start:end]
        if len(core) >= MIN_SCRUB_LENGTH:
            cores += [core, core.replace("+", "-").replace("/", "_")]
    return list(dict.fromkeys(cores))


def patterns(secret_values: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression matching every form of every value; None when there is nothing to scrub."""
    forms: set[str] = set()
    for value in secret_values:
        if len(value) < MIN_SCRUB_LENGTH:
            continue
        forms.update([value, *_escaped_forms(value), *_base64_cores(value)])
    if not forms:
        return None
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


def scrub(text: str, secret_values: Iterable[str] | re.Pattern[str] | None) -> str:
    """`text` with every form of every secret value replaced by ***."""
    pattern = secret_values if isinstance(secret_values, re.Pattern) or secret_values is None else patterns(secret_values)
    return pattern.sub(SHOWN, text) if pattern is not None and text else text


def scrub_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` scrubbed of the secrets in `env` (default: this process's environment)."""
    return scrub(text, values(os.environ if env is None else env))


class ScrubbingSink(io.RawIOBase):
    """A byte stream that scrubs secrets before passing bytes on. A flush passes on everything but
    a tail as long as the longest form of a secret (less one byte), which may be the start of a
    secret split across two writes; `close` passes on the rest."""

    def __init__(self, sink: BinaryIO, secret_values: Iterable[str], hold_bytes: int = 65536) -> None:
        super().__init__()
        self.sink = sink
        forms = list(secret_values)
        self.pattern = patterns(forms)
        longest = max((len(f.encode("utf-8")) for v in forms for f in [v, *_escaped_forms(v)]), default=0)
        self.keep = max(longest - 1, 0) if self.pattern is not None else 0
        # No secret spans a line break (the usual case): a whole line is never held back.
        self.lines_are_safe = not any("\n" in v or "\r" in v for v in forms)
        self.hold_bytes = hold_bytes
        self._held = b""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._held += bytes(data)
        if len(self._held) > self.hold_bytes:
            self._emit(final=False)
        return len(data)

    def _emit(self, final: bool) -> None:
        text = self._held.decode("utf-8", errors="surrogateescape")
        cleaned = scrub(text, self.pattern).encode("utf-8", errors="surrogateescape")
        cut = len(cleaned) if final else max(len(cleaned) - self.keep, 0)
        if self.lines_are_safe:
            cut = max(cut, cleaned.rfind(b"\n") + 1, cleaned.rfind(b"\r") + 1)
        if cut:
            self.sink.write(cleaned[:cut])
        self._held = cleaned[cut:]

    def flush(self) -> None:
        if not self.closed:
            self._emit(final=False)
            self.sink.flush()

    def close(self) -> None:
        if not self.closed:
            self._emit(final=True)
            self.sink.flush()
        super().close()
