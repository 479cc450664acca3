"""Run tile programs on ``AccelTop`` in ``amaranth.sim``, judged by verification's own pieces.

Everything but the simulator loop comes from ``verification``, as in the cocotb testbench: the
case's DRAM image with its operands laid out per ``Program.tensors`` and the golden image after
the program (``verification.golden.prepare``, which also checks the golden interpreter against
plain numpy and times the program on the SimPy model), the memory with docs/isa.md timing
(``verification.common.memory.MemoryModel``) and the value comparison
(``verification.common.scoreboard.compare_values``). The runner records when each unit took
each instruction (start) and raised ``done`` (end = that cycle + 1), the ``busy`` and ``cycles``
outputs, and the DRAM bytes afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator

from dataflows.isa import Unit, encode
from dataflows.program import Program
from dataflows.tiling import Tiling
from rtl.top import AccelTop
from verification.common.memory import MemoryInputs, MemoryModel, MemoryOutputs
from verification.common.scoreboard import compare_values
from verification.golden import Prepared, prepare
from verification.programs import Case
from workloads.lowering import GemmTask
from workloads.spec import HardwareSpec, SchedulePasses

__all__ = ["RunResult", "prepare_case", "run_on_rtl", "check_values"]


def prepare_case(hw: HardwareSpec, program: Program, tasks: tuple[GemmTask, ...],
                 tilings: tuple[Tiling, ...], passes: SchedulePasses, seed: int,
                 segment: str = "gemm") -> Prepared:
    """The verification case of a scheduler program (``segment``: ``"gemm"`` or ``"pregen"``),
    ready to run: random image from ``seed``, golden image, model timing."""
    case = Case(seed, segment, hw, program, tuple(tasks), tuple(tilings), segment, passes)
    return prepare(case)


@dataclass
class RunResult:
    """What one run on the RTL did."""

    cycles: int  # the ``cycles`` output after the run
    busy_cycles: int  # cycles ``busy`` stayed high from cycle 0
    trace: list[tuple[int, int]]  # per instruction, (start, end)
    image: np.ndarray  # the DRAM bytes after the run


def _drive(ctx, top: AccelTop, now: MemoryInputs, held: dict[str, bool]) -> None:
    """Set the memory's outputs for this cycle; ``held`` (the values the DUT sees now) saves
    the ``ctx.set`` of every unchanged one, which is slow. ``now`` itself cannot serve as the
    next cycle's record: ``MemoryModel.sample`` clears its valids when a handshake completes."""
    if now.rd_data_valid:
        ctx.set(top.mem_rd_data.payload.data, now.rd_data)
    for signal, name in ((top.mem_rd_data.valid, "rd_data_valid"),
                         (top.mem_rd_req.ready, "rd_req_ready"),
                         (top.mem_wr_req.ready, "wr_req_ready"),
                         (top.mem_wr_data.ready, "wr_data_ready"),
                         (top.mem_wr_resp.valid, "wr_resp_valid")):
        value = getattr(now, name)
        if held.get(name) != value:
            ctx.set(signal, value)
            held[name] = value


def _sample(ctx, top: AccelTop, driven: MemoryInputs) -> MemoryOutputs:
    """The DUT's settled memory-side outputs (readies only where the memory offers something)."""
    out = MemoryOutputs()
    if driven.rd_data_valid:
        out.rd_data_ready = bool(ctx.get(top.mem_rd_data.ready))
    if driven.wr_resp_valid:
        out.wr_resp_ready = bool(ctx.get(top.mem_wr_resp.ready))
    if driven.wr_data_ready and ctx.get(top.mem_wr_data.valid):
        out.wr_data_valid = True
        out.wr_data = ctx.get(top.mem_wr_data.payload.data)
        out.wr_strb = ctx.get(top.mem_wr_data.payload.strb)
    for kind, port in (("rd", top.mem_rd_req), ("wr", top.mem_wr_req)):
        if ctx.get(port.valid):
            setattr(out, f"{kind}_req_valid", True)
            setattr(out, f"{kind}_req_addr", ctx.get(port.payload.addr))
            setattr(out, f"{kind}_req_beats", ctx.get(port.payload.beats))
    return out


def run_on_rtl(prepared: Prepared, top: AccelTop | None = None,
               limit: int = 100_000) -> RunResult:
    """Load the case's program through ``instr``, pulse ``start`` and run until ``busy`` falls.

    Cycle 0 is the cycle after ``start``; the memory starts from a copy of the case's image.
    """
    hw, program = prepared.case.hw, prepared.case.program
    top = top or AccelTop(hw)
    mem = MemoryModel(prepared.image.data.copy(), hw)
    queues = program.per_unit()
    ports = {Unit.DMA: top.controller.dma, Unit.PE: top.controller.pe,
             Unit.VEC: top.controller.vec}
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    taken = {u: 0 for u in Unit}
    finished = {u: 0 for u in Unit}
    out: dict[str, int] = {}

    async def bench(ctx):
        for instr in program.instrs:
            ctx.set(top.instr.valid, 1)
            ctx.set(top.instr.payload, encode(instr))
            assert ctx.get(top.instr.ready)
            await ctx.tick()
        ctx.set(top.instr.valid, 0)
        ctx.set(top.start, 1)
        await ctx.tick()
        ctx.set(top.start, 0)
        held: dict[str, bool] = {}
        busy_cycles = None
        for cycle in range(limit):
            # Drive this cycle's memory outputs (they depend only on earlier cycles), then
            # sample the settled DUT; the handshakes complete at the edge ending the cycle.
            now = mem.drive(cycle)
            _drive(ctx, top, now, held)
            mem.sample(cycle, _sample(ctx, top, now))
            for unit, port in ports.items():
                if ctx.get(port.instr.valid) and ctx.get(port.instr.ready):
                    starts[queues[unit][taken[unit]]] = cycle
                    taken[unit] += 1
                if ctx.get(port.done):
                    ends[queues[unit][finished[unit]]] = cycle + 1
                    finished[unit] += 1
            if not ctx.get(top.busy):
                busy_cycles = cycle
                break
            await ctx.tick()
        assert busy_cycles is not None, f"still busy after {limit} cycles"
        out["busy"] = busy_cycles
        out["cycles"] = ctx.get(top.cycles)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    trace = [(starts.get(i, -1), ends.get(i, -1)) for i in range(len(program.instrs))]
    return RunResult(out["cycles"], out["busy"], trace, mem.data)


def check_values(prepared: Prepared, result: RunResult) -> None:
    """Every specified bit of the DRAM image equals the golden image's: the outputs, and every
    other byte (random in the input image), which the program must leave untouched."""
    count, examples = compare_values(prepared.case, prepared.expected, result.image)
    assert count == 0, f"{count} values differ from the golden image: " + "; ".join(examples)
