"""The scoreboard: RTL values against the golden image, RTL cycles against the SimPy model.

Values: every specified bit of the DRAM image after the run (outputs, and every other byte,
which must be untouched) is compared with the golden interpreter's image. Cycles: the RTL's
``cycles`` output must equal ``run_program(...).cycles`` exactly, and every instruction's start
and end the testbench can observe (DMA instructions on the memory ports; every unit's
instructions on the controller's issue interfaces when the DUT has them) must equal the model's
trace. ``busy`` must stay high through the model's last cycle and fall exactly in the cycle the
program ends (docs/isa.md: high until every unit has drained; the memory's last write response
arrives in that cycle at the latest). Under random backpressure the memory deliberately
stretches the schedule, so only values (and protocol rules) are compared, and the result says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dataflows.program import Program
from verification.dram import DramImage, from_bytes
from verification.programs import Case

__all__ = ["ProgramResult", "compare_values", "compare_timing"]

_EXAMPLES = 5


@dataclass
class ProgramResult:
    """The verdict on one program; plain data, written as one JSON line per program.

    ``cycle_diff`` is ``rtl_cycles - model_cycles`` (None when cycles were not compared or the
    RTL never finished). ``busy_cycles`` is the program cycle in which ``busy`` was first low,
    ``last_response`` the program cycle in which the last write response was taken.
    """

    seed: int
    kind: str
    hardware: str
    description: str
    instructions: int
    model_cycles: int
    backpressure: bool = False
    rtl_cycles: int | None = None
    busy_cycles: int | None = None
    value_mismatches: int = 0
    value_examples: list[str] = field(default_factory=list)
    timing_mismatches: int = 0
    timing_examples: list[str] = field(default_factory=list)
    timed_instructions: int = 0
    last_response: int | None = None
    protocol_errors: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def cycles_compared(self) -> bool:
        return not self.backpressure

    @property
    def cycle_diff(self) -> int | None:
        if not self.cycles_compared or self.rtl_cycles is None:
            return None
        return self.rtl_cycles - self.model_cycles

    @property
    def busy_ok(self) -> bool:
        """``busy`` fell exactly in the cycle the program ended."""
        return self.busy_cycles == self.model_cycles

    @property
    def ok(self) -> bool:
        if self.error or self.value_mismatches or self.protocol_errors:
            return False
        if not self.cycles_compared:
            return True
        return self.rtl_cycles == self.model_cycles and self.busy_ok and not self.timing_mismatches

    def summary(self) -> str:
        """One line: verdict, seed, what differed."""
        if self.ok:
            cycles = (f"{self.model_cycles} cycles, equal" if self.cycles_compared
                      else "values only (random backpressure)")
            return f"PASS seed {self.seed} {self.kind}: {cycles}"
        problems = []
        if self.error:
            problems.append(self.error)
        if self.value_mismatches:
            problems.append(f"{self.value_mismatches} value mismatch(es): "
                            + "; ".join(self.value_examples))
        if self.protocol_errors:
            problems.append("protocol: " + "; ".join(self.protocol_errors[:_EXAMPLES]))
        if self.cycles_compared and self.rtl_cycles is not None:
            if self.rtl_cycles != self.model_cycles:
                problems.append(f"RTL took {self.rtl_cycles} cycles; archsim predicts "
                                f"{self.model_cycles} (tolerance 0)")
            if not self.busy_ok:
                response = ("" if self.last_response is None else
                            f"; the last write response was taken in cycle {self.last_response}")
                problems.append(f"busy fell in cycle {self.busy_cycles}; expected "
                                f"{self.model_cycles}{response}")
            if self.timing_mismatches:
                problems.append(f"{self.timing_mismatches} instruction timing mismatch(es): "
                                + "; ".join(self.timing_examples))
        return f"FAIL seed {self.seed} {self.kind}: " + " | ".join(problems)

    def to_json(self) -> dict:
        data = asdict(self)
        data["ok"], data["cycle_diff"] = self.ok, self.cycle_diff
        return data

    @classmethod
    def from_json(cls, data: dict) -> ProgramResult:
        data = {k: v for k, v in data.items() if k not in ("ok", "cycle_diff")}
        return cls(**data)


def _locate(case: Case, addr: int) -> tuple:
    """A key naming what byte ``addr`` belongs to: a tensor element, a tensor byte, or nothing."""
    for tensor in case.program.tensors.values():
        if tensor.addr <= addr < tensor.addr + tensor.nbytes:
            offset = addr - tensor.addr
            if tensor.fmt == "dense":
                row, byte = divmod(offset, tensor.stride)
                return (tensor.name, row, byte // tensor.elem_bytes)
            return (tensor.name, "byte", offset)
    return ("outside", addr)


def compare_values(case: Case, expected: DramImage, actual: np.ndarray) -> tuple[int, list[str]]:
    """(number of differing elements or bytes, descriptions of the first few)."""
    bad = expected.differing(actual)
    keys: dict[tuple, int] = {}
    for addr in bad:
        keys.setdefault(_locate(case, int(addr)), int(addr))
    examples = []
    tensors = case.program.tensors
    for key, addr in list(keys.items())[:_EXAMPLES]:
        name = key[0]
        if name == "outside":
            examples.append(f"byte {addr:#x} outside every tensor changed "
                            f"({expected.data[addr]:#04x} -> {int(actual[addr]):#04x})")
        elif key[1] == "byte":
            examples.append(f"{name} byte {key[2]}: expected {expected.data[addr]:#04x} "
                            f"(care {expected.care[addr]:#04x}), got {int(actual[addr]):#04x}")
        else:
            t = tensors[name]
            start = t.addr + key[1] * t.stride + key[2] * t.elem_bytes
            span = slice(start, start + t.elem_bytes)
            bits = 8 * t.elem_bytes
            want = int(from_bytes(expected.data[span], bits))
            got = int(from_bytes(np.asarray(actual[span], dtype=np.uint8), bits))
            examples.append(f"{name}[{key[1]}, {key[2]}]: expected {want}, got {got}")
    return len(keys), examples


def compare_timing(program: Program, trace: list[tuple[int, int]],
                   observed: dict[str, dict[int, tuple[int, int]]]) -> tuple[int, int, list[str]]:
    """(instructions timed, mismatches, descriptions of the first few).

    ``observed`` maps a source ("memory ports", "issue interface") to per-instruction
    ``(start, end)`` in program cycles; every observation is compared with the model's trace.
    Examples come in program order: the first instruction that deviates is usually the cause.
    """
    bad, timed = [], set()
    for source, timing in observed.items():
        for index, (start, end) in timing.items():
            timed.add(index)
            model = trace[index]
            if (start, end) != tuple(model):
                op = program.instrs[index].op.name
                bad.append((index, f"instruction {index} ({op}) on the {source}: RTL cycles "
                                   f"[{start}, {end}), archsim [{model[0]}, {model[1]})"))
    bad.sort()
    return len(timed), len(bad), [text for _, text in bad[:_EXAMPLES]]
