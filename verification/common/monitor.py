"""The DMA as seen from the memory ports: which instruction each request belongs to, and when.

docs/isa.md fixes what a DMA instruction puts on the memory interface: one request per tile row,
``addr + r·stride``, ⌈row_bytes / W⌉ beats each, reads for loads and writes for stores. Given the
requests the memory model accepted, :func:`match_dma` checks them against that list and recovers
each DMA instruction's start (the cycle its first request was accepted) and end (the cycle after
its last beat). The cost model requires exactly these: an instruction starting in cycle ``s``
ends in ``s + latency + beats`` only if its first request is accepted in ``s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataflows.cost import mask_bytes
from dataflows.isa import Op, Unit, row_bytes
from dataflows.program import Program
from verification.common.memory import Request
from workloads.arith import ceil_div
from workloads.spec import HardwareSpec

__all__ = ["ExpectedRequest", "expected_requests", "DmaObservation", "match_dma"]


@dataclass(frozen=True, slots=True)
class ExpectedRequest:
    """One request a DMA instruction must issue."""

    index: int  # the instruction's index in the program
    row: int
    kind: str  # "rd" or "wr"
    addr: int
    beats: int

    def describe(self, program: Program) -> str:
        op = program.instrs[self.index].op.name
        return (f"{self.kind} addr={self.addr:#x} beats={self.beats} (instruction {self.index} "
                f"{op} row {self.row})")


def expected_requests(program: Program, hw: HardwareSpec) -> list[ExpectedRequest]:
    """Every memory request of the program's DMA instructions, in DMA order."""
    width = hw.dram.bandwidth_bytes_per_cycle
    out = []
    for index in program.per_unit()[Unit.DMA]:
        instr = program.instrs[index]
        if instr.op == Op.LOAD_MASK:  # a mask tile is contiguous: one burst for all its rows
            beats = ceil_div(mask_bytes(instr.rows, instr.cols), width)
            out.append(ExpectedRequest(index, 0, "rd", instr.addr, beats))
            continue
        kind = "wr" if instr.op in (Op.STORE_C, Op.STORE_B) else "rd"
        beats = ceil_div(row_bytes(instr, hw), width)
        for r in range(instr.rows):
            out.append(ExpectedRequest(index, r, kind, instr.addr + r * instr.stride, beats))
    return out


@dataclass
class DmaObservation:
    """What the memory ports reveal of the DMA unit.

    Attributes
    ----------
    timing
        Per DMA instruction index, its observed (start, end) in program cycles; only
        instructions whose requests all matched and completed.
    errors
        Requests that differ from docs/isa.md (wrong kind, address or length, missing, extra).
    """

    timing: dict[int, tuple[int, int]]
    errors: list[str]


def match_dma(program: Program, hw: HardwareSpec, requests: list[Request],
              origin: int) -> DmaObservation:
    """Match accepted requests with the program's expected ones.

    Parameters
    ----------
    requests
        The memory model's accepted requests, in acceptance order (absolute cycles).
    origin
        The absolute cycle of program cycle 0.
    """
    expected = expected_requests(program, hw)
    errors = []
    for i, (exp, got) in enumerate(zip(expected, requests)):
        if (exp.kind, exp.addr, exp.beats) != (got.kind, got.addr, got.beats):
            errors.append(f"request {i}: expected {exp.describe(program)}, got {got.kind} "
                          f"addr={got.addr:#x} beats={got.beats} in cycle {got.accepted - origin}")
    if len(requests) < len(expected):
        errors.append(f"{len(expected) - len(requests)} request(s) never issued, the first "
                      f"{expected[len(requests)].describe(program)}")
    elif len(requests) > len(expected):
        extra = requests[len(expected)]
        errors.append(f"{len(requests) - len(expected)} unexpected request(s), the first "
                      f"{extra.kind} addr={extra.addr:#x} in cycle {extra.accepted - origin}")
    timing: dict[int, tuple[int, int]] = {}
    bad = {expected[i].index for i in range(len(expected))
           if i >= len(requests) or (expected[i].kind, expected[i].addr, expected[i].beats)
           != (requests[i].kind, requests[i].addr, requests[i].beats)}
    first: dict[int, Request] = {}
    for exp, got in zip(expected, requests):
        if exp.index in bad:
            continue
        first.setdefault(exp.index, got)
        instr = program.instrs[exp.index]
        last_row = 0 if instr.op == Op.LOAD_MASK else instr.rows - 1
        if exp.row == last_row and got.last_beat >= 0:
            timing[exp.index] = (first[exp.index].accepted - origin, got.last_beat + 1 - origin)
    return DmaObservation(timing, errors)
