"""Build frozen dataclasses from YAML, checking types and keys, and naming file:line and the key
path of every mistake. The config loader is the only user; nothing else sees raw dicts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ci.errors import ConfigError

KeyPath = tuple[Union[str, int], ...]


@dataclasses.dataclass(frozen=True)
class Check:
    """A value rule attached with typing.Annotated, e.g. Annotated[int, POSITIVE]."""

    test: typing.Callable[[Any], bool]
    wants: str


POSITIVE = Check(lambda v: v > 0, "> 0")
NON_NEGATIVE = Check(lambda v: v >= 0, ">= 0")
NON_EMPTY = Check(lambda v: len(v) > 0, "not empty")


def at_most(limit: float) -> Check:
    """An upper bound, for values where a larger one would silently disable what they guard."""
    return Check(lambda v: v <= limit, f"<= {limit}")


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@dataclasses.dataclass
class Document:
    """One parsed YAML file: its data and the line of every key, for error messages."""

    source: str
    data: Any
    lines: dict[KeyPath, int]

    def where(self, path: KeyPath) -> str:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return f"{self.source}:{self.lines[path[:cut]]}"
        return self.source

    def fail(self, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(f"{self.where(path)}: {format_path(path)}: {message}")


def parse_yaml(text: str, source: str) -> Document:
    """Parse YAML text, recording the line of each key; duplicate keys are errors."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            lines: dict[KeyPath, int] = {}
            if node is not None:
                _record_lines(node, (), lines, source)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigError(f"{source}{line}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {exc}") from None
    return Document(source, data, lines)


def read_yaml(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    return parse_yaml(text, str(path))


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"{source}:{key_node.start_mark.line + 1}: {format_path(path + (key,))}: duplicate key"
                )
            seen.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _record_lines(item, path + (index,), lines, source)


def build(kind: Any, value: Any, doc: Document, path: KeyPath = ()) -> Any:
    """Convert `value` to `kind` (a dataclass or typing form), raising ConfigError on mismatch."""
    checks: tuple[Check, ...] = ()
    if typing.get_origin(kind) is typing.Annotated:
        kind, *extras = typing.get_args(kind)
        checks = tuple(e for e in extras if isinstance(e, Check))
    result = _convert(kind, value, doc, path)
    for check in checks:
        if not check.test(result):
            raise doc.fail(path, f"must be {check.wants}, got {value!r}")
    return result


def _type_name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if kind in names:
        return names[kind]
    origin = typing.get_origin(kind)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(kind)
        return " ".join([_type_name(base), *(e.wants for e in extras if isinstance(e, Check))])
    if origin is Literal:
        return ", ".join(map(str, typing.get_args(kind)))
    if origin in (tuple, list):
        return "a list"
    if origin in (dict, Mapping) or dataclasses.is_dataclass(kind):
        return "a mapping"
    return str(kind)


def _convert(kind: Any, value: Any, doc: Document, path: KeyPath) -> Any:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:
            return build(real[0], value, doc, path)
        for option in real:
            try:
                return build(option, value, doc, path)
            except ConfigError:
                continue
        raise doc.fail(path, f"must be one of {', '.join(_type_name(o) for o in real)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise doc.fail(path, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(kind):
        return _build_dataclass(kind, value, doc, path)
    if origin in (dict, Mapping):
        key_kind, value_kind = typing.get_args(kind)
        if not isinstance(value, dict):
            raise doc.fail(path, f"must be a mapping, got {_shown(value)}")
        return types.MappingProxyType(
            {
                build(key_kind, k, doc, path + (k,)): build(value_kind, v, doc, path + (k,))
                for k, v in value.items()
            }
        )
    if origin in (tuple, list):
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list):
            raise doc.fail(path, f"must be a list, got {_shown(value)}")
        return tuple(build(item_kind, item, doc, path + (i,)) for i, item in enumerate(value))
    if kind is Any:
        return value
    if kind is dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise doc.fail(path, f"must be a date (YYYY-MM-DD), got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, bool):
        raise doc.fail(path, f"must be {_type_name(kind)}, got {value!r}")
    if kind in (str, int, float, bool):
        if not isinstance(value, kind):
            raise doc.fail(path, f"must be {_type_name(kind)}, got {_shown(value)}")
        return value
    raise TypeError(f"schema cannot build {kind!r}")  # a bug in our dataclasses, not user input


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _build_dataclass(kind: Any, value: Any, doc: Document, path: KeyPath) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise doc.fail(path, f"must be a mapping, got {_shown(value)}")
    hints = typing.get_type_hints(kind, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(kind) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise doc.fail(path + (unknown[0],), f"unknown key {unknown[0]!r} (allowed: {allowed})")
    kwargs = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = build(hints[name], value[name], doc, path + (name,))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise doc.fail(path, f"missing required key {name!r}")
    return kind(**kwargs)
