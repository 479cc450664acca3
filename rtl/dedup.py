"""Merge identical modules of the emitted Verilog, so that Yosys synthesizes each one once.

Amaranth writes one Verilog module per *instance*: a 32×32 array is 1,024 PE modules, nearly all
alike (25 MB of Verilog for ``sat_vcu1525``). The synthesis flow keeps the hierarchy (no
``-flatten``), so every module is mapped on its own and a module's cells do not depend on where
it is instantiated. Merging modules whose text is identical (up to their name, source
attributes and Yosys's internal counters) and pointing every instance at the one kept therefore
leaves the netlist's cell counts unchanged while synthesizing each distinct module once:
``rtl.synth.resources`` multiplies a module's cells by its instances, as before.

A module's identity includes the modules it instantiates (after their own merging), so the
merge runs children first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["MergedVerilog", "merge_identical_modules"]

#: One module: its leading attributes, ``module NAME (`` … ``endmodule``.
_MODULE = re.compile(r"(?:^\(\*[^\n]*\*\)\n)*^module (\S+) *\(.*?^endmodule\n", re.S | re.M)
#: An instance line inside a module body: ``  TYPE  NAME (``.
_INSTANCE = re.compile(r"^(  )(\S+)(  ?\S+ \()$", re.M)
#: What differs between copies of one module without changing its logic.
_NOISE = (re.compile(r'\(\* src = "[^"]*" \*\)'), re.compile(r"dump_module\$\d+"))


@dataclass(frozen=True)
class MergedVerilog:
    """The merged text and how much it merged."""

    text: str
    modules_before: int
    modules_after: int


def _identity(name: str, body: str) -> str:
    body = body.replace(f"module {name} ", "module ", 1)
    for noise in _NOISE:
        body = noise.sub("", body)
    return hashlib.sha256(body.encode()).hexdigest()


def _children_first(bodies: dict[str, str]) -> list[str]:
    order, seen = [], set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for _, kind, _ in _INSTANCE.findall(bodies[name]):
            if kind in bodies:
                visit(kind)
        order.append(name)

    for name in bodies:
        visit(name)
    return order


def merge_identical_modules(verilog: str) -> MergedVerilog:
    """``verilog`` with every set of identical modules replaced by its first member."""
    found = list(_MODULE.finditer(verilog))
    bodies = {m.group(1): m.group(0) for m in found}
    keep: dict[str, str] = {}        # identity → the module kept for it
    replaced: dict[str, str] = {}    # module name → the module that replaces it
    merged: dict[str, str] = {}
    for name in _children_first(bodies):
        body = _INSTANCE.sub(lambda m: m.group(1) + replaced.get(m.group(2), m.group(2))
                             + m.group(3), bodies[name])
        kept = keep.setdefault(_identity(name, body), name)
        replaced[name] = kept
        if kept == name:
            merged[name] = body
    head = verilog[:found[0].start()] if found else verilog
    text = head + "".join(merged[m.group(1)] for m in found if m.group(1) in merged)
    return MergedVerilog(text, len(found), len(merged))
