"""What ``archsim report`` reads of a ``results.json`` (docs/results.md) and a ``serve.json``
(docs/serving.md), checked before any table or figure is drawn.

The models list only the fields the report uses and allow every other key, so an older or a
newer file still reports; a hand-edited file with a field of the wrong type is one line naming
the file and the field, as a bad workload is, instead of a traceback in a plot.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

__all__ = ["run_problem", "serve_problem"]

#: A count or a quantity: a JSON number (not a string, not a boolean), never negative.
Count = Annotated[StrictInt | StrictFloat, Field(ge=0)]
Positive = Annotated[StrictInt | StrictFloat, Field(gt=0)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Array(_Open):
    rows: Annotated[StrictInt, Field(gt=0)]
    cols: Annotated[StrictInt, Field(gt=0)]


class _Dram(_Open):
    bandwidth_bytes_per_cycle: Positive


class _Hardware(_Open):
    name: str
    clock_mhz: Positive
    array: _Array
    dram: _Dram


class _Workload(_Open):
    name: str | None = None
    mode: str | None = None
    operations: list[dict[str, Any]] = []


class _Layer(_Open):
    layer: str
    phase: str
    cycles: Count
    pe_busy_cycles: Count
    dram_read_bytes: Count
    dram_write_bytes: Count
    macs_executed: Count
    macs_dense_equivalent: Count


class _Comparison(_Open):
    speedup: Positive | None = None
    amdahl_bound: Positive | None = None


class _Run(_Open):
    workload: _Workload
    hardware: _Hardware
    summary: dict[str, Any]
    layers: list[_Layer]
    comparison: _Comparison | None = None


class _Step(_Open):
    phase: str
    q_len: Count
    kv_len: Count
    cycles: Count
    linear_cycles: Count
    attention_cycles: Count
    kv_bytes: Count | None = None
    kv_blocks: Count | None = None
    unit_busy_cycles: dict[str, Count] = {}


class _Serve(_Open):
    workload: str | None = None
    hardware: str | None = None
    model: str
    batch: Annotated[StrictInt, Field(gt=0)]
    prompt_tokens: Annotated[StrictInt, Field(gt=0)]
    chunk_tokens: Annotated[StrictInt, Field(gt=0)] | None = None
    output_tokens: Annotated[StrictInt, Field(gt=0)]
    clock_mhz: Positive | None = None
    ttft_cycles: Count
    ttft_ms: Count | None = None
    tpot_cycles: Count
    prefill_bound: str | None = None
    decode_bound: str | None = None
    steps: list[_Step]


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _member(part: Any) -> bool:
    return isinstance(part, str) and part.startswith(("int", "float", "function-after",
                                                      "constrained"))


def _problem(model: type[BaseModel], doc: dict[str, Any], docs: str) -> str | None:
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        error = exc.errors()[0]
        # A union (int or float) reports each member; its location ends in the member's name.
        loc = tuple(p for p in error["loc"] if not _member(p))
        msg = error["msg"] if loc == tuple(error["loc"]) else "Input should be a number"
        msg = re.sub(r" or instance of \w+", "", msg)
        given = "" if error["type"] == "missing" else f", got {error['input']!r}"
        return f"{_dotted(loc)}: {msg}{given} ({docs})"
    return None


def run_problem(doc: dict[str, Any]) -> str | None:
    """The first field of a results.json the report cannot use, as ``field: message``."""
    return _problem(_Run, doc, "docs/results.md")


def serve_problem(doc: dict[str, Any]) -> str | None:
    """The first field of a serve.json the report cannot use, as ``field: message``."""
    return _problem(_Serve, doc, "docs/serving.md")
