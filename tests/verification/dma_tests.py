"""cocotb tests of the testbench itself, on the DMA-only stand-in ``dma_dut.DmaCopier``.

Programs are random DMA-only tile programs (``LOAD_A`` rounds whose beats a ``STORE_C`` round
writes back elsewhere). Their expected image comes from a Python model of the copier, their
timing from the real SimPy model, and they run through the real bench, memory model, monitor
and scoreboard. The plan's entries pick a seed and one of ``dma_dut.BUGS``.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from dma_dut import BUGS

from archsim.model import run_program
from dataflows.isa import Instr, Op, row_bytes
from dataflows.program import Program
from verification.common.bench import AccelBench
from verification.common.ports import PortMap
from verification.dram import DramImage
from verification.golden import Prepared
from verification.programs import Case
from verification.session import PLAN_ENV
from workloads.spec import HardwareSpec, SchedulePasses

_IMAGE_BYTES = 4096
_SOURCE, _DEST = 0, 2048  # loads read below _DEST, stores write at and above it


def dma_program(hw: HardwareSpec, rng: np.random.Generator) -> Program:
    """Rounds of loads whose beats the following stores write back, beat for beat."""
    width = hw.dram.bandwidth_bytes_per_cycle
    per_beat = width // hw.acc_bytes  # accumulators per beat: a STORE_C row of whole beats
    program, dest = Program(), _DEST
    for _ in range(int(rng.integers(1, 4))):
        beats = 0
        for _ in range(int(rng.integers(1, 3))):
            rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 3 * width))
            stride = cols + int(rng.integers(0, 9))
            addr = int(rng.integers(0, _DEST - rows * stride - width))
            instr = Instr(Op.LOAD_A, addr=addr, stride=stride, rows=rows, cols=cols)
            program.instrs.append(instr)
            beats += rows * -(-row_bytes(instr, hw) // width)
        rows = int(rng.choice([d for d in range(1, beats + 1) if beats % d == 0]))
        cols = beats // rows * per_beat
        stride = cols * hw.acc_bytes + width * int(rng.integers(0, 2))
        program.instrs.append(Instr(Op.STORE_C, addr=dest, stride=stride, rows=rows, cols=cols))
        dest += rows * stride
    program.tags = [0] * len(program.instrs)
    return program


def copier_model(program: Program, hw: HardwareSpec, image: DramImage) -> DramImage:
    """What the copier leaves in DRAM: loads queue raw beats, stores write them in order."""
    width = hw.dram.bandwidth_bytes_per_cycle
    out, fifo = image.copy(), []
    for instr in program.instrs:
        beats = -(-row_bytes(instr, hw) // width)
        for r in range(instr.rows):
            base = instr.addr + r * instr.stride
            for b in range(beats):
                if instr.op == Op.LOAD_A:
                    fifo.append(image.read(base + b * width, width).copy())
                else:
                    out.write(base + b * width, fifo.pop(0))
    return out


def prepared_dma(hw: HardwareSpec, seed: int) -> Prepared:
    rng = np.random.default_rng(seed)
    program = dma_program(hw, rng)
    image = DramImage(_IMAGE_BYTES)
    image.data[:] = rng.integers(0, 256, _IMAGE_BYTES, dtype=np.uint8)
    stats = run_program(program, hw, trace=True)
    case = Case(seed, "dma", hw, program, (), (), "dma", SchedulePasses())
    return Prepared(case, image, copier_model(program, hw, image), list(stats.trace), stats.cycles)


@cocotb.test()
async def dma_programs(dut):
    """Run the plan's DMA programs, each with its bug selected, and record every verdict."""
    with open(os.environ[PLAN_ENV]) as f:
        plan = json.load(f)
    hw = HardwareSpec.model_validate_json(plan["hardware"])
    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    bench = AccelBench(dut, PortMap.from_json(plan["ports"]))
    with open(plan["results"], "a") as out:
        for entry in plan["programs"]:
            dut.bug.value = BUGS.index(entry["bug"])
            result = await bench.run_case(prepared_dma(hw, entry["seed"]),
                                          float(plan.get("backpressure", 0.0)))
            out.write(json.dumps(result.to_json()) + "\n")
            out.flush()
            dut._log.info(f"[{entry['bug']}] {result.summary()}")
