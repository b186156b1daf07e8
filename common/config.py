"""Typed parameters: each params.yaml section loads into a frozen dataclass.

Every problem in a section (unknown keys, missing keys, wrong types, values out of range) is collected and
reported at once, each with the field, the value and how to fix it. Defaults live in params.yaml only: the
dataclasses declare types, never fallback values, so nothing deep in the code can drift from the file.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a parameter: where, what value, and how to fix it."""

    field: str
    value: Any
    message: str
    fix: str

    def __str__(self) -> str:
        shown = "<missing>" if self.value is _MISSING else repr(self.value)
        return f"{self.field} = {shown}: {self.message}. Fix: {self.fix}"


class ParamsError(ValueError):
    """A params file, or one of its sections, does not match the declared parameters."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the parameters:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
_SHARED, _DERIVE = "params_key", "derive"  # field metadata: see `shared`


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a params file into a dict, with a clear error for a missing or malformed file."""
    if not path.is_file():
        raise ParamsError(str(path), [Problem("<file>", str(path), f"no such file (working directory {Path.cwd()})",
                                              "give the path of an existing params file, or run from the repository "
                                              "root, where params.yaml is")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(str(path), [Problem("<file>", str(path), f"not valid YAML ({exc})", "fix the syntax")])
    if not isinstance(data, dict):
        raise ParamsError(
            str(path), [Problem("<file>", type(data).__name__, "top level is not a mapping", "use `section: {...}`")]
        )
    return data


def load_section(path: Path, section: str, cls: type[T]) -> T:
    """Load `section` of the params file at `path` into the frozen dataclass `cls`."""
    return section_of(read_yaml(path), path, section, cls)


def shared(key: str, derive: Callable[[Any], Any] | None = None) -> Any:
    """A field whose value is stated once elsewhere in the params file, at the dotted `key` (e.g. `study.chunk`), and
    read into every section that declares it: `chunk: int = shared("study.chunk")`. `derive` computes the field
    from that value (it raises ParamsError for a value it cannot read)."""
    return dataclasses.field(metadata={_SHARED: key, _DERIVE: derive})


def shared_keys(cls: type) -> dict[str, str]:
    """field name -> the dotted key it is read from, for the `shared` fields of the dataclass `cls`."""
    return {f.name: f.metadata[_SHARED] for f in dataclasses.fields(cls) if _SHARED in f.metadata}


def lookup(data: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of a params mapping, or `_MISSING`."""
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def section_of(data: dict[str, Any], path: Path, section: str, cls: type[T]) -> T:
    """`section` of the params file `path`, already read into `data`, as the frozen dataclass `cls` (its `shared`
    fields filled from where the file states them)."""
    if section not in data:
        hint = _closest(section, data)
        raise ParamsError(
            str(path),
            [Problem(section, _MISSING, "section is missing", f"add a `{section}:` section{hint}")],
        )
    raw, problems = data[section], []
    fields = [f for f in dataclasses.fields(cls) if _SHARED in f.metadata] if isinstance(raw, dict) else []
    raw = dict(raw) if fields else raw
    for field in fields:
        name, key, derive = field.name, field.metadata[_SHARED], field.metadata[_DERIVE]
        if name in raw:
            problems.append(Problem(f"{section}.{name}", raw.pop(name), f"is stated once for the study, as `{key}`",
                                    f"remove it here; change `{key}` instead"))
        raw[name] = lookup(data, key)
        if raw[name] is _MISSING:
            problems.append(Problem(key, _MISSING, f"is missing (`{section}.{name}` is read from it)",
                                    f"add `{key}` to {path}"))
        elif derive is not None:
            try:
                raw[name] = derive(raw[name])
            except ParamsError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ParamsError(str(path), problems)
    return from_dict(cls, raw, prefix=section, source=str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of the params mapping `data` with each dotted key of `overrides` replaced (a list or mapping value
    replaces the whole value: nothing is merged). A key that `data` lacks is an error: a typo must not pass."""
    out = copy.deepcopy(data)
    problems = []
    for key, value in overrides.items():
        *parents, last = str(key).split(".")
        node = lookup(out, ".".join(parents)) if parents else out
        if not isinstance(node, dict) or last not in node:
            known = node if isinstance(node, dict) else out
            problems.append(Problem(str(key), value, "is not a key of the params it overrides",
                                    f"use an existing dotted key{_closest(last, known)}"))
            continue
        node[last] = copy.deepcopy(value)
    if problems:
        raise ParamsError(source, problems)
    return out


def from_dict(cls: type[T], raw: Any, prefix: str, source: str = "<params>") -> T:
    """Build the dataclass `cls` from plain data, raising ParamsError with every problem found."""
    problems: list[Problem] = []
    value = _convert(cls, raw, prefix, problems)
    if not problems:
        problems.extend(_semantic_problems(value, prefix))
    if problems:
        raise ParamsError(source, problems)
    return value


def _convert(tp: Any, raw: Any, field: str, problems: list[Problem]) -> Any:
    """Convert `raw` to type `tp`; append problems instead of raising so all are reported together."""
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, raw, field, problems)
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if raw not in choices:
            hint = _closest(str(raw), [str(c) for c in choices])
            problems.append(Problem(field, raw, f"must be one of {list(choices)}", f"pick one of them{hint}"))
        return raw
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if raw is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], raw, field, problems)
        raise TypeError(f"unsupported union type for {field}: {tp}")
    if origin in (list, tuple):
        if not isinstance(raw, list):
            problems.append(Problem(field, raw, f"expected a list, got {type(raw).__name__}", "write a YAML list"))
            return raw
        args = get_args(tp)
        item_type = args[0] if args else Any
        items = [_convert(item_type, item, f"{field}[{i}]", problems) for i, item in enumerate(raw)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(raw, dict):
            problems.append(Problem(field, raw, f"expected a mapping, got {type(raw).__name__}", "write `key: value`"))
            return raw
        key_type, value_type = get_args(tp)
        return {
            _convert(key_type, k, f"{field}.<key>", problems): _convert(value_type, v, f"{field}.{k}", problems)
            for k, v in raw.items()
        }
    return _convert_scalar(tp, raw, field, problems)


def _convert_dataclass(cls: Any, raw: Any, field: str, problems: list[Problem]) -> Any:
    if not isinstance(raw, dict):
        problems.append(Problem(field, raw, f"expected a mapping, got {type(raw).__name__}", "write `key: value`"))
        return None
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in raw:
        if key not in fields:
            hint = _closest(str(key), fields)
            problems.append(Problem(f"{field}.{key}", raw[key], "unknown key", f"remove it or rename it{hint}"))
    values = {}
    for name in fields:
        if name not in raw:
            example = _example(hints[name])
            problems.append(Problem(f"{field}.{name}", _MISSING, "required key is missing", f"add `{name}: {example}`"))
            continue
        values[name] = _convert(hints[name], raw[name], f"{field}.{name}", problems)
    if len(values) < len(fields) or any(p.field.startswith(f"{field}.") for p in problems):
        return None
    return cls(**values)


def _convert_scalar(tp: Any, raw: Any, field: str, problems: list[Problem]) -> Any:
    # bool is a subclass of int in Python: reject it explicitly where a number is expected.
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        problems.append(Problem(field, raw, f"expected true/false, got {type(raw).__name__}", "write true or false"))
    elif tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        problems.append(Problem(field, raw, f"expected an integer, got {type(raw).__name__}", "write a whole number"))
    elif tp is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        problems.append(Problem(field, raw, f"expected a number, got {type(raw).__name__}", "write a number, e.g. 0.5"))
    elif tp is str:
        if isinstance(raw, str):
            return raw
        problems.append(Problem(field, raw, f"expected a string, got {type(raw).__name__}", "quote the value"))
    elif tp is Path:
        if isinstance(raw, str) and raw:
            return Path(raw)
        problems.append(Problem(field, raw, "expected a non-empty path", "write a relative or absolute path"))
    elif tp is Any:
        return raw
    else:
        raise TypeError(f"unsupported parameter type for {field}: {tp}")
    return raw


def _semantic_problems(value: Any, prefix: str) -> Iterator[Problem]:
    """Ask each dataclass (nested ones too) for its own range checks via an optional `problems()` method."""
    if not dataclasses.is_dataclass(value):
        return
    for f in dataclasses.fields(value):
        child = getattr(value, f.name)
        if dataclasses.is_dataclass(child):
            yield from _semantic_problems(child, f"{prefix}.{f.name}")
    check = getattr(value, "problems", None)
    if callable(check):
        for p in check():
            yield dataclasses.replace(p, field=f"{prefix}.{p.field}")


def closest_name(word: str, options: Any) -> str | None:
    """The option most like `word` (for "did you mean" hints), or None when nothing is close."""
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1)
    return match[0] if match else None


def _closest(word: str, options: Any) -> str:
    match = closest_name(word, options)
    return f" (did you mean '{match}'?)" if match else ""


def _example(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return str(get_args(tp)[0])
    if origin in (list, tuple):
        return "[...]"
    if dataclasses.is_dataclass(tp) or origin is dict:
        return "{...}"
    return {bool: "true", int: "<integer>", float: "<number>", str: "<text>", Path: "<path>"}.get(tp, "<value>")


def to_dict(value: Any) -> dict[str, Any]:
    """The plain-data form of a params dataclass, for tracking and metadata (paths as strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
