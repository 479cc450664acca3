"""YAML → typed specs. The only module in archsim that imports ``yaml``.

The loader composes the YAML node tree itself (instead of ``yaml.safe_load``) so that it can
reject duplicate keys, which PyYAML silently overwrites, and so that every validation error can
be reported as ``file:line: path.to.field: message``.

A workload file may hold its hardware inline (a mapping under ``hardware:``), reference a file by
a path relative to itself, or name a shipped preset (``hardware: sat_vcu1525``).
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from workloads.errors import SpecError
from workloads.files import read_at_most
from workloads.limits import Limits
from workloads.spec import HardwareSpec, ModelOp, WorkloadSpec
from workloads.zoo import model_layers

__all__ = [
    "load_workload", "load_hardware", "load_document", "preset_path", "PRESET_DIR", "EXAMPLE_DIR",
    "dotted_override", "hardware_field_at", "hardware_file_field_at", "workload_field_at",
    "HARDWARE_FIELD",
    "is_sweep_file",
]

PRESET_DIR = Path(__file__).parent / "hardware"
EXAMPLE_DIR = Path(__file__).parent / "examples"


@dataclass
class _Doc:
    """Plain data of one YAML file plus the line (1-based) of every node, keyed by path."""

    path: Path
    data: Any
    lines: dict[tuple, int]
    overridden: dict[tuple, str]


def preset_path(name: str) -> Path:
    """Path of a shipped hardware preset, or a SpecError listing the presets."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        hint = difflib.get_close_matches(name, known, n=1)
        extra = f"; did you mean '{hint[0]}'?" if hint else ""
        raise SpecError(f"unknown hardware preset {name!r}; known presets: {', '.join(known)}{extra}")
    return path


#: Bounds on one YAML document, checked before anything is built (docs/workloads.md, "Limits").
#: Real workloads, presets and sweeps are a few kilobytes, tens of nodes deep at most.
MAX_FILE_BYTES = 1 << 20
#: Nesting depth of mappings and lists, counted after aliases are followed.
MAX_DEPTH = 64
#: Nodes (scalars, lists, mappings) and scalar characters after every alias is expanded: an
#: "alias bomb" of a few hundred bytes would otherwise expand to gigabytes.
MAX_NODES = 100_000
MAX_SCALAR_CHARS = 16 << 20

# Tags a value may carry: PyYAML's safe scalars, lists and mappings. Dates stay text.
_STR, _TIMESTAMP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"
_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str")}
_COLLECTION_TAGS = {"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


def _read_text(path: Path) -> str:
    """The file as text, read at most ``MAX_FILE_BYTES`` (``/dev/zero`` and a named pipe
    nobody writes to must not hang; workloads.files)."""
    try:
        raw = read_at_most(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except ValueError:  # an embedded NUL byte in the path itself
        raise SpecError(f"{str(path)!r}: a path cannot contain a NUL byte") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(
            f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; an archsim YAML file is a few "
            f"kilobytes (is this the right file?)"
        )
    nul = raw.find(b"\0")
    if nul >= 0 and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        line = raw.count(b"\n", 0, nul) + 1
        raise SpecError(
            f"{path}:{line}: NUL byte at offset {nul}; expected UTF-8 YAML text, not a binary file"
        )
    try:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8 text"
        ) from None


#: libyaml's parser and composer where PyYAML was built with it (20x faster than pure Python).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_shape(text: str, path: Path) -> None:
    """Bound nesting and node count on the event stream, before any node is built."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            continue
        elif not isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            continue
        nodes += 1
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            what = (f"nested deeper than {MAX_DEPTH} levels" if depth > MAX_DEPTH
                    else f"more than {MAX_NODES:,} values")
            raise SpecError(f"{path}:{event.start_mark.line + 1}: the document is {what} (limit; "
                            f"docs/workloads.md)")


def _compose(text: str, path: Path) -> yaml.Node | None:
    """The node tree of ``text``, or a one-line SpecError with the line of the problem."""
    try:
        _check_shape(text, path)
        return yaml.compose(text, Loader=_LOADER)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise SpecError(
            f"{path}:{line}: invalid YAML: character {chr(exc.character)!r} "
            f"(U+{exc.character:04X}) is not allowed in YAML text"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}:{line} invalid YAML: {problem}") from None


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Reject recursive aliases and documents that aliases expand beyond the limits.

    Aliases share nodes, so the composed tree is small; sizes are summed once per node
    (memoized) to learn what building plain data would cost before building it.
    """
    sizes: dict[int, tuple[int, int, int]] = {}  # id → (nodes, scalar chars, height)
    active: set[int] = set()

    def fail(node: yaml.Node, at: tuple, message: str) -> typing.NoReturn:
        raise SpecError(f"{path}:{node.start_mark.line + 1}: {_dotted(at)}: {message}")

    def walk(node: yaml.Node, at: tuple, depth: int) -> tuple[int, int, int]:
        key = id(node)
        if key in active:
            fail(node, at, "recursive alias (a node contains itself); archsim files must be trees")
        if key not in sizes:
            if isinstance(node, yaml.ScalarNode):
                sizes[key] = (1, len(node.value), 0)
            else:
                active.add(key)
                nodes, chars, height = 1, 0, 0
                children = ([v for pair in node.value for v in pair]
                            if isinstance(node, yaml.MappingNode) else node.value)
                for i, child in enumerate(children):
                    step = (i,) if isinstance(node, yaml.SequenceNode) else (
                        (_key_text(node.value[i // 2][0]),) if i % 2 else ())
                    n, c, h = walk(child, at + step, depth + 1)
                    nodes, chars, height = nodes + n, chars + c, max(height, h + 1)
                    if nodes > MAX_NODES or chars > MAX_SCALAR_CHARS:
                        fail(node, at, f"aliases expand this to more than {MAX_NODES:,} nodes "
                                       f"or {MAX_SCALAR_CHARS >> 20} MiB of text (limit)")
                active.discard(key)
                sizes[key] = (nodes, chars, height)
        if depth + sizes[key][2] > MAX_DEPTH:
            fail(node, at, f"aliases nest this deeper than {MAX_DEPTH} levels (limit)")
        return sizes[key]

    walk(root, (), 0)


def _key_text(node: yaml.Node) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else "<key>"


def _plain_data(text: str, path: Path, lines: dict[tuple, int]) -> Any:
    """Bounded, checked YAML → plain data (dicts, lists, scalars); ``None`` for an empty text."""
    root = _compose(text, path)
    if root is None:
        return None
    _check_expansion(root, path)
    return _construct(root, (), lines, path)


#: Parsed files and ``--set`` values by their text (a design-space sweep loads the same
#: workload, hardware file and override values for every point: parsing them again was three
#: quarters of the sweep driver's time per point). Callers get a copy: overrides edit it.
_PARSED: dict[tuple[Path, str], tuple[Any, dict[tuple, int]]] = {}
_OVERRIDES: dict[str, tuple[tuple, Any]] = {}
MAX_PARSED = 32  # files are at most MAX_FILE_BYTES each


def _plain_copy(data: Any) -> Any:
    """A copy of plain YAML data deep enough to edit: its dicts and lists (scalars are
    immutable)."""
    if isinstance(data, dict):
        return {k: _plain_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain_copy(v) for v in data]
    return data


def _read_doc(path: Path) -> _Doc:
    text = _read_text(path)  # always read: the memo below is keyed by what the file holds now
    parsed = _PARSED.get((path, text))
    if parsed is None:
        lines: dict[tuple, int] = {}
        parsed = (_plain_data(text, path, lines), lines)
        if len(_PARSED) >= MAX_PARSED:
            _PARSED.clear()
        _PARSED[(path, text)] = parsed
    data, lines = _plain_copy(parsed[0]), dict(parsed[1])
    if data is None:
        raise SpecError(f"{path}: file is empty; expected a mapping with 'version: 1'")
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}:{lines[()]}: expected a mapping at the top level, "
            f"got a {'list' if isinstance(data, list) else 'scalar'}"
        )
    return _Doc(path, data, lines, {})


def _construct(node: yaml.Node, at: tuple, lines: dict[tuple, int], path: Path) -> Any:
    lines[at] = node.start_mark.line + 1
    if node.tag not in _SCALAR_TAGS | _COLLECTION_TAGS | {_TIMESTAMP}:
        if node.tag == "tag:yaml.org,2002:merge":
            message = "merge keys ('<<') are not supported; write the keys out"
        else:
            message = f"unsupported YAML tag {_short(node.tag)!r}; write a plain value"
        raise SpecError(f"{path}:{lines[at]}: {_dotted(at)}: {message}")
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(
                    f"{path}:{key_node.start_mark.line + 1}: {_dotted(at)}: a "
                    f"{_node_kind(key_node)} cannot be a key; keys are names"
                )
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError(
                    f"{path}:{key_node.start_mark.line + 1}: {_dotted(at)}: merge keys ('<<') "
                    f"are not supported; write the keys out"
                )
            key = _scalar(key_node, at, path)
            if key in out:
                first = lines[at + (key,)]
                raise SpecError(
                    f"{path}:{key_node.start_mark.line + 1}: {_dotted(at + (key,))}: duplicate key "
                    f"{key!r} (first defined on line {first})"
                )
            lines[at + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, at + (key,), lines, path)
            lines[at + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, at + (i,), lines, path) for i, item in enumerate(node.value)]
    return _scalar(node, at, path)


def _node_kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "mapping", yaml.SequenceNode: "list"}.get(type(node), "scalar")


def _scalar(node: yaml.Node, at: tuple, path: Path) -> Any:
    if node.tag == _TIMESTAMP:
        return node.value  # a date is text to every archsim field
    if node.tag not in _SCALAR_TAGS:
        raise SpecError(f"{path}:{node.start_mark.line + 1}: {_dotted(at)}: unsupported YAML tag "
                        f"{_short(node.tag)!r}; write a plain value")
    try:
        # PyYAML's safe resolution of ints, floats, bools and nulls, without its dict building.
        value = yaml.SafeLoader.construct_object(_SAFE, node, deep=True)
    except (ValueError, yaml.YAMLError):
        kind = node.tag.rsplit(":", 1)[-1]
        raise SpecError(f"{path}:{node.start_mark.line + 1}: {_dotted(at)}: {node.value!r} is not "
                        f"a valid {kind}") from None
    if isinstance(value, str) and not node.style and _EXPONENT_NUMBER.fullmatch(value):
        return float(value)  # YAML 1.2 reads 1e9 as a number; PyYAML's 1.1 rules want 1.0e9
    return value


#: A plain (unquoted) number in exponent form without a dot, which YAML 1.1 leaves as text.
_EXPONENT_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


_SAFE = yaml.SafeLoader("")


def _short(tag: str) -> str:
    """A tag as the user wrote it (``!!int``, not ``tag:yaml.org,2002:int``)."""
    return tag.replace("tag:yaml.org,2002:", "!!")


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


# --------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------


def dotted_override(item: str) -> str:
    """``key=value`` with list indices in the key written with dots: ``operations[0].m=3`` (as
    errors print a field) and ``operations.0.m=3`` (docs/workloads.md) are the same override."""
    key, sep, value = item.partition("=")
    return re.sub(r"\[(\d+)\]", r".\1", key.strip()) + sep + value


def _parse_override(item: str) -> tuple[tuple, Any]:
    parsed = _OVERRIDES.get(item)
    if parsed is None:
        if len(_OVERRIDES) >= MAX_PARSED:
            _OVERRIDES.clear()
        parsed = _OVERRIDES[item] = _parse_override_text(item)
    loc, value = parsed
    return loc, _plain_copy(value)


def _parse_override_text(item: str) -> tuple[tuple, Any]:
    key, sep, value = dotted_override(item).partition("=")
    if not sep or not key:
        raise SpecError(f"--set {item!r}: expected key=value, e.g. hardware.array.rows=16")
    loc = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    try:
        parsed = _plain_data(value, Path(f"--set {item}"), {})
    except SpecError:
        parsed = value  # not YAML on its own: the text itself
    return loc, parsed


def _apply_override(doc: _Doc, loc: tuple, value: Any, original: str,
                    model: type[BaseModel]) -> None:
    """Set ``loc`` of ``doc`` (validated later as ``model``) to ``value``. A section the file
    omitted (``schedule:``, ``hardware.energy:``) is written in with its defaults first, so an
    override reaches every field a complete file would have."""
    node = doc.data
    for i, part in enumerate(loc[:-1]):
        child = _child(node, part)
        if child is None and isinstance(node, dict):
            child = _omitted_section(model, loc[: i + 1], doc.data)
            if child is not None:
                node[part] = child
                doc.overridden[loc[: i + 1]] = original  # its errors blame this override
        if child is None:
            raise SpecError(
                f"--set {original}: {_dotted(loc[: i + 1])} does not exist in {doc.path}"
            )
        node = child
    if not isinstance(node, (dict, list)) or (isinstance(node, list) and not isinstance(loc[-1], int)):
        raise SpecError(f"--set {original}: {_dotted(loc[:-1])} is not a mapping or list")
    try:
        node[loc[-1]] = value
    except IndexError:
        raise SpecError(f"--set {original}: index {loc[-1]} is out of range") from None
    doc.overridden[loc] = original


def _child(node: Any, part: Any) -> Any:
    """``node[part]``, or None where there is none (an explicit ``null`` included)."""
    try:
        return node[part]
    except (KeyError, IndexError, TypeError):
        return None


def _omitted_section(model: type[BaseModel], loc: tuple, data: Any) -> dict | None:
    """What a file that omitted the section at ``loc`` means: the section's default written
    out (``{kind: dense}`` for the default sparsity; ``{}`` for an optional section without
    one), or None where ``loc`` names no section of ``model``."""
    for candidate in _models_at(model, loc[:-1], data):
        info = candidate.model_fields.get(loc[-1]) if isinstance(loc[-1], str) else None
        if info is None or not _models_in(info.annotation):
            continue
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            tags = {t: getattr(default, t) for t in ("kind", "op") if t in type(default).model_fields}
            return {**tags, **default.model_dump(mode="json", exclude_defaults=True)}
        if default is None:
            return {}
    return None


# --------------------------------------------------------------------------------------------
# Validation errors → file:line: path: message
# --------------------------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes an annotation can hold (through Optional, Union, tuple…)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        if arg is not Ellipsis:
            found.extend(_models_in(arg))
    return found


def _tag_matches(model: type[BaseModel], node: Any) -> bool:
    """False when ``node`` names a union tag (``op:``/``kind:``) that ``model`` does not carry."""
    if not isinstance(node, dict):
        return True
    for tag in ("op", "kind"):
        if tag in node and tag in model.model_fields:
            if node[tag] not in typing.get_args(model.model_fields[tag].annotation):
                return False
    return True


def _fields_at(root: type[BaseModel], loc: tuple, data: Any = None) -> list[str]:
    """Field names of the model(s) found at ``loc`` (used for did-you-mean suggestions)."""
    return sorted({name for m in _models_at(root, loc, data) for name in m.model_fields})


def _models_at(root: type[BaseModel], loc: tuple, data: Any = None) -> list[type[BaseModel]]:
    """The model(s) found at ``loc``.

    Where a field is a union (operations, sparsity, strategies), the data's own ``op:`` or
    ``kind:`` picks the member, so a suggestion never comes from another member's fields.
    """
    candidates: list[type[BaseModel]] = [root]
    node = data
    for part in loc:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if isinstance(part, int):
            continue  # list/tuple index: the element type is already in the candidates
        nxt: list[type[BaseModel]] = []
        for model in candidates:
            if part in model.model_fields:
                nxt.extend(_models_in(model.model_fields[part].annotation))
        candidates = [m for m in nxt if _tag_matches(m, node)] or nxt
    return [m for m in candidates if _tag_matches(m, node)] or candidates  # list elements


def _has(node: dict | list, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and part < len(node)


def _strip_tags(loc: tuple, data: Any) -> tuple:
    """Drop union tags pydantic inserts into locations (``operations.0.gemm.m`` → ``…0.m``)."""
    out: list = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(part, str) and not part.isidentifier() and not isinstance(node, dict):
            continue  # below a plain value: a union member's name (``constrained-int``)
        if isinstance(node, dict) and isinstance(part, str):
            # `op: model` has a field `model` too: right after a list index it is the tag.
            after_index = i > 0 and isinstance(loc[i - 1], int)
            is_tag = part not in node or (part == node.get("op") and after_index)
            if is_tag and part in (node.get("op"), node.get("kind")):
                continue
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(out)


def _line_of(doc: _Doc, loc: tuple, msg: str = "") -> str:
    """Where the field at ``loc`` was written: the ``--set`` that wrote it or a mapping around
    it (the file's lines below that are stale), else its line of the file. A check of a whole
    mapping (``n must satisfy 0 < n <= m``) blames the ``--set`` of a field inside it that
    ``msg`` names, by its path below the mapping or by its own name (``params.n`` as ``n``), as
    that override made the mapping fail."""
    inside = [o for o in doc.overridden if len(o) > len(loc) and o[:len(loc)] == loc]
    names = {**{o[-1:]: o for o in inside}, **{o[len(loc):]: o for o in inside}}
    named = _named_first(names, msg, bare=True) if msg else ()
    if named:
        return f"--set {doc.overridden[names[named]]}"
    for end in range(len(loc), 0, -1):
        if loc[:end] in doc.overridden:
            return f"--set {doc.overridden[loc[:end]]}"
    for end in range(len(loc), -1, -1):
        if loc[:end] in doc.lines:
            return f"{doc.path}:{doc.lines[loc[:end]]}"
    return str(doc.path)


def _describe(error: dict, model: type[BaseModel], loc: tuple, data: Any = None) -> str:
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        known = _fields_at(model, loc[:-1], data)
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        msg = "unknown key" + (f"; did you mean '{hint[0]}'?" if hint else f"; expected one of: {', '.join(known)}")
    elif error["type"] == "missing":
        msg = "required field is missing"
    elif error["type"] in ("literal_error", "union_tag_invalid"):
        # A misspelled choice (objective 'latency', strategy kind 'grd'): suggest the nearest.
        ctx = error.get("ctx", {})
        given = ctx.get("tag", error.get("input"))
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ctx.get("expected_tags", "")))
        hint = difflib.get_close_matches(str(given), choices, n=1) if isinstance(given, str) else []
        msg += f", got {error['input']!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
    elif error["type"] == "union_tag_not_found":
        msg = _missing_tag(error)
    elif "input" in error and error["type"] not in ("value_error", "assertion_error"):
        msg += f", got {error['input']!r}"
    return msg


def _tag_of(error: dict) -> str:
    """The key that says which kind of mapping this is (``op``, ``kind``), for an error of a
    mapping without it."""
    return error.get("ctx", {}).get("discriminator", "").strip("'")


def _missing_tag(error: dict) -> str:
    """A mapping without the key that says its kind (``- kind: gemm`` where ``- op: gemm`` is
    meant): name the key, and the line the user may have meant."""
    tag, given = _tag_of(error), error.get("input")
    msg = "required field is missing (it says which kind of entry this is)"
    if not isinstance(given, dict):
        return msg
    near = [key for key in ("op", "kind", "type") if key != tag and isinstance(given.get(key), str)]
    if near:
        return msg + f"; did you mean '{tag}: {given[near[0]]}' for '{near[0]}: {given[near[0]]}'?"
    return msg + f"; got {', '.join(map(str, given)) or 'nothing'}"


def _limits(data: Any) -> Limits:
    """The document's ``limits:`` (defaults where invalid: validation then reports them)."""
    try:
        return Limits.model_validate(data.get("limits", {}) if isinstance(data, dict) else {})
    except ValidationError:
        return Limits()


def _validate(model: type[BaseModel], doc: _Doc, data: Any) -> Any:
    try:
        # The file's folder resolves relative paths inside it (SpGEMM .mtx sources).
        return model.model_validate(data, context={"base_dir": doc.path.parent,
                                                   "limits": _limits(data)})
    except ValidationError as exc:
        # A misspelled key yields both "unknown key" and "required field is missing"; the first
        # says what to fix, so unknown keys are reported before anything else.
        error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        loc = _strip_tags(tuple(error["loc"]), data)
        msg = _describe(error, model, loc, data)
        if error["type"] == "union_tag_not_found":
            loc += (_tag_of(error),)
        if error["type"] == "extra_forbidden":
            msg = _left_by_kind_override(doc, loc) or msg
        if not loc:
            loc, msg = _named_location(msg)
        if not loc:
            loc = _overridden_in(doc, msg) or _mentioned_in(doc, msg)
        raise SpecError(f"{_line_of(doc, loc, msg)}: {_dotted(loc)}: {msg}") from None


def _left_by_kind_override(doc: _Doc, loc: tuple) -> str:
    """Why a key is unknown when a ``--set`` changed its mapping's ``kind``: the file's fields
    of the old kind stay behind (``--set operations.0.pattern.kind=dense`` under a sliding
    window's ``window:``); "" when no override did."""
    override = doc.overridden.get(loc[:-1] + ("kind",))
    if override is None:
        return ""
    key, _, kind = override.partition("=")
    parent = key.rsplit(".", 1)[0]
    return (f"not a field of kind {kind}: --set {override} changed the kind and kept the file's "
            f"other fields; replace the whole mapping instead: --set '{parent}={{kind: {kind}}}'")


def _overridden_in(doc: _Doc, msg: str) -> tuple:
    """The location of a ``--set`` override that a whole-document check's message names
    (``array.rows=1 must be …``), so the error points at the override, not at the file the
    user did not change; () when it names none. The override named first is the one the
    check is about: "acc_bits must be at least 2*data_bits" blames acc_bits even when
    data_bits was overridden too (and before it)."""
    return _named_first(doc.overridden, msg, bare=True)


def _mentioned_in(doc: _Doc, msg: str) -> tuple:
    """The field of the file that a whole-document check's message names first
    (``array.rows=3 must be a multiple of n=2``), so the error points at its line rather than
    the file's first; () when it names none. A bare top-level key counts only as
    ``key=value``: "name" may be a plain word of the message."""
    return _named_first(doc.lines, msg, bare=False)


def _named_first(locs, msg: str, bare: bool) -> tuple:
    """Of ``locs``, the one whose dotted path ``msg`` names first (the innermost on a tie);
    with ``bare`` False a one-part path counts only when followed by ``=``."""
    found = []
    for loc in locs:
        if not loc:
            continue
        after = r"(?![\w])" if bare or len(loc) > 1 else "(?==)"
        named = re.search(rf"(?<![\w.]){re.escape(_dotted(loc))}{after}", msg)
        if named:
            found.append((named.start(), -len(loc), loc))
    return min(found, key=lambda f: f[:2])[2] if found else ()


#: A cross-field check on a whole document names the field it blames at the start of its
#: message (``operations[0].phase: …``), since pydantic locates it at the top level.
_NAMED_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*): (.+)$", re.S)


def _named_location(msg: str) -> tuple[tuple, str]:
    """(location, rest of the message) of a message that starts with a field path, else
    ((), the message)."""
    found = _NAMED_FIELD.match(msg)
    if not found:
        return (), msg
    parts = re.findall(r"\[(\d+)\]|([A-Za-z_]\w*)", found.group(1))
    return tuple(int(i) if i else name for i, name in parts), found.group(2)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _split_overrides(overrides: typing.Sequence[str]) -> list[tuple[tuple, Any, str]]:
    return [(*_parse_override(item), item) for item in overrides]


def _hardware_doc(ref: Any, base: Path) -> _Doc | None:
    if not isinstance(ref, str):
        return None
    looks_like_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    return _read_doc((base / ref) if looks_like_path else preset_path(ref))


def is_sweep_file(path: Path) -> bool:
    """Whether ``path`` holds a DSE sweep (``axes:``) rather than a workload (a SpecError if it
    is not a readable YAML mapping)."""
    return "axes" in _read_doc(path).data


def _missing_hardware(doc: _Doc) -> str:
    """Why a workload has no ``hardware:``, as helpfully as the file allows."""
    keys = [k for k in doc.data if isinstance(k, str)]
    close = difflib.get_close_matches("hardware", keys, n=1, cutoff=0.7)
    if close:
        return (f"{doc.path}:{doc.lines[(close[0],)]}: {close[0]}: unknown key; "
                f"did you mean 'hardware'?")
    if "array" in keys and "operations" not in keys:
        return (f"{doc.path}:1: this is a hardware file, not a workload; name it in a workload's "
                f"'hardware:' or pass it with --hardware")
    if "axes" in keys:
        return f"{doc.path}:1: this is a DSE sweep file, not a workload; run it with 'archsim dse'"
    return (f"{doc.path}:1: hardware: required field is missing "
            f"(a mapping, a file path or a preset name)")


def _hardware_ref_doc(ref: str | Path) -> _Doc:
    """A hardware file or preset named outside any workload (``--hardware``, ``load_hardware``).

    A name that is neither an existing file nor a preset is blamed on the name itself.
    """
    text = str(ref)
    try:
        # A named pipe or a device is read as a file (read_at_most bounds both); a folder
        # named like a preset is not.
        is_file = Path(text).exists() and not Path(text).is_dir()
    except (OSError, ValueError):
        is_file = False
    if is_file:
        return _not_a_workload(_read_doc(Path(text)))
    if text.endswith((".yaml", ".yml")) or "/" in text or "\0" in text:
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        shown = repr(text) if "\0" in text else text
        raise SpecError(f"{shown}: file not found (expected a hardware YAML file or a preset "
                        f"name: {known})")
    return _read_doc(preset_path(text))


def _not_a_workload(doc: _Doc) -> _Doc:
    """``doc``, unless it is a workload or a sweep where a hardware file belongs (then its
    hardware keys would each be 'unknown key')."""
    data = doc.data
    if "array" in data or not ("operations" in data or "axes" in data):
        return doc
    if "axes" in data:
        raise SpecError(f"{doc.path}:1: this is a DSE sweep file, not a hardware file; run it "
                        f"with 'archsim dse'")
    ref = data.get("hardware")
    which = (f"its hardware: {ref}" if isinstance(ref, str) else
             "copy its inline 'hardware:' into a file of its own" if isinstance(ref, dict) else
             "a preset name or a hardware YAML file")
    raise SpecError(f"{doc.path}:1: this is a workload, not a hardware file; give the hardware "
                    f"instead ({which})")


def load_hardware(path: str | Path, overrides: typing.Sequence[str] = ()) -> HardwareSpec:
    """Load a hardware description (a file path or a preset name)."""
    doc = _hardware_ref_doc(path)
    for loc, value, original in _split_overrides(overrides):
        _apply_override(doc, loc, value, original, HardwareSpec)
    return _validate(HardwareSpec, doc, doc.data)


def load_workload(
    path: str | Path,
    hardware: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
) -> WorkloadSpec:
    """Load a workload YAML into a validated :class:`WorkloadSpec`.

    Parameters
    ----------
    path
        The workload file.
    hardware
        Replaces the file's ``hardware:`` entry (a path or a preset name), as ``--hardware`` does.
    overrides
        ``key=value`` strings (``hardware.array.rows=16``, ``operations.0.batch=8``) applied to
        the raw document before validation, as ``--set`` does.

    Raises
    ------
    SpecError
        With a one-line ``file:line: field.path: message`` description of the first problem.
    """
    # The hardware argument first: a wrong one is its own fault, not the workload's.
    hw_arg = _hardware_ref_doc(hardware) if hardware is not None else None
    doc = _read_doc(Path(path))
    if hw_arg is not None:
        hw_doc = hw_arg
        doc.data["hardware"] = str(hardware)
    elif "hardware" not in doc.data:
        raise SpecError(_missing_hardware(doc))
    else:
        try:
            hw_doc = _hardware_doc(doc.data["hardware"], doc.path.parent)
        except SpecError as exc:  # say which line of the workload pointed there
            raise SpecError(
                f"{doc.path}:{doc.lines.get(('hardware',), 1)}: hardware: {exc}"
            ) from None
    for loc, value, original in _split_overrides(overrides):
        if loc == ("hardware",):  # resolved above, before any override applies
            raise SpecError(f"--set {original}: the hardware as a whole is chosen with "
                            f"--hardware (a preset name or a YAML file); --set changes its "
                            f"fields, e.g. hardware.array.rows=8")
        if loc[0] not in WorkloadSpec.model_fields and loc[0] in HardwareSpec.model_fields:
            raise SpecError(f"--set {original}: {loc[0]} does not exist in {doc.path}; did you "
                            f"mean 'hardware.{_dotted(loc)}'?")
        if loc[0] == "hardware" and hw_doc is not None:
            _apply_override(hw_doc, loc[1:], value, original, HardwareSpec)
        else:
            _apply_override(doc, loc, value, original, WorkloadSpec)
    if hw_doc is not None:
        doc.data["hardware"] = _validate(HardwareSpec, hw_doc, hw_doc.data)
    spec = _validate(WorkloadSpec, doc, doc.data)
    _check_patterns(spec, doc)
    _check_models(spec, doc)
    return spec


def _check_models(spec: WorkloadSpec, doc: _Doc) -> None:
    """A zoo model whose attention layers the zoo cannot build (too large for the array limits,
    for example) is an error at the op's line, not a traceback in the scheduler."""
    for i, op in enumerate(spec.operations):
        if not isinstance(op, ModelOp) or op.pattern is None:
            continue
        try:
            model_layers(op)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            loc = ("operations", i)
            raise SpecError(f"{_line_of(doc, loc)}: {_dotted(loc)}: its attention layers: "
                            f"{message}") from None


def _check_patterns(spec: WorkloadSpec, doc: _Doc) -> None:
    """An N:M pattern the hardware does not list is an error unless the workload opts in."""
    if spec.unsupported_nm == "masked_dense":
        return
    for i, name, pattern in spec.unsupported_patterns():
        own = isinstance(doc.data["operations"][i], dict) and "sparsity" in doc.data["operations"][i]
        loc = ("operations", i, "sparsity") if own else ("sparsity",)
        raise SpecError(
            f"{_line_of(doc, loc)}: {_dotted(loc)}: N:M {pattern} (operation {name!r}) is not "
            f"among hardware {spec.hardware.name!r}'s nm_patterns ({spec.supported_patterns_text()}); "
            f"choose a supported one, add it to nm_patterns, or set 'unsupported_nm: "
            f"masked_dense' to run it dense at dense speed"
        )


#: A hardware field named in a later check's message, such as ``buffers.weight_bytes``.
HARDWARE_FIELD = re.compile(r"\b((?:array|buffers|dram|vector_unit|controller)\.[a-z_]+)\b")


def hardware_field_at(path: str | Path, field: str, hardware: str | Path | None = None,
                      overrides: typing.Sequence[str] = ()) -> str:
    """Where the hardware ``field`` (``buffers.weight_bytes``) of the workload at ``path`` got
    its value: the ``--set`` that set it last, else ``file:line`` in the hardware file
    (``hardware``, as ``--hardware`` names it, or the workload's preset or file) or in the
    workload's inline ``hardware:``; the file's name where neither says more. For checks made
    after loading (the scheduler's), so their errors point where the loader's do."""
    loc = _field_loc(field)
    override = _override_of(("hardware", *loc), overrides)
    if override:
        return override
    if hardware is not None:
        return hardware_file_field_at(hardware, field)
    try:
        doc = _read_doc(Path(path))
        hw = _hardware_doc(doc.data.get("hardware"), doc.path.parent)
        return _line_of(doc, ("hardware", *loc)) if hw is None else _line_of(hw, loc)
    except SpecError:
        return str(path)


def hardware_file_field_at(hardware: str | Path, field: str,
                           overrides: typing.Sequence[str] = ()) -> str:
    """Where ``field`` (``buffers.weight_bytes``) of a hardware file or preset named outside any
    workload (``archsim rtl tiny``) got its value: the ``--set`` (keys of the hardware, as that
    command takes them) that set it last, else its ``file:line``; the name as given where
    neither says more."""
    loc = _field_loc(field)
    override = _override_of(loc, overrides)
    if override:
        return override
    try:
        return _line_of(_hardware_ref_doc(hardware), loc)
    except SpecError:
        return str(hardware)


def _field_loc(field: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in field.split("."))


def workload_field_at(path: str | Path, field: str, overrides: typing.Sequence[str] = ()) -> str:
    """Where the workload ``field`` (``serve.output_tokens``) got its value: the ``--set`` that
    set it last, else its ``file:line``; for checks made after loading (the serving loop's)."""
    loc = tuple(int(p) if p.isdigit() else p for p in dotted_override(field).split("."))
    try:
        return _override_of(loc, overrides) or _line_of(_read_doc(Path(path)), loc)
    except SpecError:
        return str(path)


def _override_of(loc: tuple, overrides: typing.Sequence[str]) -> str:
    """``--set ITEM`` of the last override that set ``loc``, a mapping around it or a field
    inside it, else ""."""
    for item in reversed(overrides):
        key = tuple(int(p) if p.isdigit() else p
                    for p in dotted_override(item).partition("=")[0].split("."))
        if loc[: len(key)] == key or key[: len(loc)] == loc:
            return f"--set {item}"
    return ""


def load_document(
    path: str | Path, model: type[BaseModel]
) -> tuple[Any, typing.Callable[[tuple], str]]:
    """Strictly read any archsim YAML file (a DSE sweep, for example) into a pydantic model.

    The same machinery as :func:`load_workload`: duplicate keys are rejected and validation
    errors read ``file:line: field.path: message``.

    Returns
    -------
    tuple
        The validated model, and a function mapping a field path such as ``("axes", 2, "key")``
        to ``"file:line"``, for errors the caller finds after validation.
    """
    doc = _read_doc(Path(path))
    return _validate(model, doc, doc.data), lambda loc: _line_of(doc, tuple(loc))
