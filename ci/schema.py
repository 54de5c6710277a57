"""Build frozen dataclasses from YAML, checking types and keys, and naming file:line and the key
path of every mistake. The config loader is the only user; nothing else sees raw dicts."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import math
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ci.errors import ConfigError
from ci.inputs import InputProblem, read_text

KeyPath = tuple[Union[str, int], ...]

# Caps that protect the config reader itself. They cannot come from config/limits.yaml, which is
# read through them; each is far above what any config here needs (the largest file is ~40 KiB,
# ~8 levels deep).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 64


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


@dataclasses.dataclass(frozen=True)
class Bound:
    """An upper bound kept in config/limits.yaml under `name`, e.g. Annotated[float, Bound("seconds")]."""

    name: str


_LIMITS: contextvars.ContextVar[Mapping[str, float] | None] = contextvars.ContextVar("limits", default=None)


@contextlib.contextmanager
def limits_in_force(limits: Mapping[str, float]) -> Iterator[None]:
    """Build with these upper bounds (config/limits.yaml) applied to every Bound-annotated value."""
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


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


def _alias_error(source: str, mark: Any) -> ConfigError:  # yaml.Mark, or libyaml's own Mark
    return ConfigError(f"{source}:{mark.line + 1}: YAML aliases (*name) are not allowed in config; "
                       "write the value out (allowed: plain YAML, no *aliases or <<: merge keys)")


def _depth_error(source: str, mark: Any) -> ConfigError:
    return ConfigError(f"{source}:{mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} levels "
                       f"(allowed: at most {MAX_YAML_DEPTH})")


def _date_error(source: str, node: yaml.Node, exc: Exception) -> ConfigError:
    why = f" ({exc})" if isinstance(exc, ValueError) else ""  # AttributeError: PyYAML on `!!timestamp x`
    return ConfigError(f"{source}:{node.start_mark.line + 1}: {node.value!r} is not a valid date{why}; "
                       "allowed: a real date, YYYY-MM-DD")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (a "billion laughs" file cannot expand) and nesting deeper
    than MAX_YAML_DEPTH, and says which line holds an impossible date. Used without libyaml."""

    source = ""
    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _alias_error(self.source, self.peek_event().start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise _depth_error(self.source, self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, AttributeError) as exc:
            raise _date_error(self.source, node, exc) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)

_CSafeLoader: type | None = getattr(yaml, "CSafeLoader", None)  # PyYAML built with libyaml: ~4x faster


if _CSafeLoader is not None:
    class _FastLoader(_CSafeLoader):  # type: ignore[misc, valid-type]
        """libyaml's composer, after `_check_events` has refused aliases and deep nesting (the
        composer itself recurses in C and expands nothing, so it must only see checked text)."""

        source = ""

        def construct_yaml_timestamp(self, node):
            try:
                return super().construct_yaml_timestamp(node)
            except (ValueError, AttributeError) as exc:
                raise _date_error(self.source, node, exc) from None

    _FastLoader.add_constructor("tag:yaml.org,2002:timestamp", _FastLoader.construct_yaml_timestamp)


def _check_events(text: str, source: str) -> None:
    """The event stream, read iteratively: an alias or nesting past MAX_YAML_DEPTH is an error."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_CSafeLoader or yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise _alias_error(source, event.start_mark)
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _depth_error(source, event.start_mark)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent) and depth + 1 > MAX_YAML_DEPTH:
                raise _depth_error(source, event.start_mark)
    except yaml.MarkedYAMLError as exc:  # libyaml 0.2.6 has a depth limit of its own, met while scanning ahead
        if "maximum nesting depth" in (exc.problem or ""):
            raise _depth_error(source, exc.problem_mark) from None
        raise


def _loader(text: str, source: str) -> yaml.SafeLoader:
    if _CSafeLoader is None:
        loader = _Loader(text)
    else:
        _check_events(text, source)
        loader = _FastLoader(text)
    loader.source = source
    return loader


def parse_yaml(text: str, source: str) -> Document:
    """Parse YAML text, recording the line of each key; duplicate keys, aliases, deep nesting and
    impossible dates are errors naming the line."""
    try:
        loader = _loader(text, source)
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
        raise ConfigError(f"{source}: malformed YAML: {' '.join(str(exc).split())}") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors on tagged scalars they cannot read (`!!bool maybe`, `!!int x`)
        detail = f"{exc.args[0]!r} cannot be read with its tag" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise ConfigError(f"{source}: malformed YAML: {detail or type(exc).__name__}") from None
    return Document(source, data, lines)


def read_yaml(path: Path) -> Document:
    """A config or override file: a regular UTF-8 file of at most MAX_CONFIG_BYTES, parsed."""
    try:
        text = read_text(path, MAX_CONFIG_BYTES)
    except InputProblem as problem:
        raise ConfigError(f"{path}: cannot read config file: {problem}") from None
    return parse_yaml(text, str(path))


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{source}:{key_node.start_mark.line + 1}: {format_path(path)}: a key must be "
                                  "a plain value (allowed: names and numbers, not lists or mappings)")
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
    bounds: tuple[Bound, ...] = ()
    if typing.get_origin(kind) is typing.Annotated:
        kind, *extras = typing.get_args(kind)
        checks = tuple(e for e in extras if isinstance(e, Check))
        bounds = tuple(e for e in extras if isinstance(e, Bound))
    result = _convert(kind, value, doc, path)
    for check in checks:
        if not check.test(result):
            raise doc.fail(path, f"must be {check.wants}, got {value!r}")
    limits = _LIMITS.get()
    if limits is not None:
        for bound in bounds:
            if result > limits[bound.name]:
                raise doc.fail(path, f"must be <= {limits[bound.name]:g} (limits.yaml {bound.name}), got {value!r}")
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
        if abs(value) > 2**53:
            raise doc.fail(path, f"must be a number of sensible size, got {value!r}")
        return float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise doc.fail(path, f"must be a finite number, got {value!r}")
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
