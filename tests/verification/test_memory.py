"""The memory model's timing, the DMA monitor and the scoreboard, without a simulator.

A scripted "DUT" (one request per row, issued in the cycle the instruction starts, every beat
taken at once) must see exactly the cycles ``dataflows.cost.dma_cycles`` predicts; that ties the
testbench's memory timing to the SimPy model's formula.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from archsim.model import run_program
from dataflows.cost import latency
from dataflows.isa import Instr, Op
from dataflows.program import Program
from verification.common.memory import MemoryModel, MemoryOutputs
from verification.common.monitor import expected_requests, match_dma
from verification.common.protocol import ProtocolError, StreamRule
from verification.common.scoreboard import ProgramResult
from workloads.load import load_hardware


@pytest.fixture(scope="module")
def hw():
    return load_hardware("tiny")


def run_ideal_dma(program: Program, hw, mem: MemoryModel, ready=lambda: True) -> dict[int, int]:
    """Drive the memory like an ideal DMA; return each instruction's end cycle."""
    reqs = expected_requests(program, hw)
    ends, cycle, issued = {}, 0, 0
    current = None
    while issued < len(reqs) or not mem.idle:
        inputs = mem.drive(cycle)
        out = MemoryOutputs(rd_data_ready=ready(), wr_resp_ready=True)
        # Issue the next instruction's rows once the previous instruction's beats are done.
        if issued < len(reqs):
            r = reqs[issued]
            if current is None or (current == r.index) or not mem.beats_outstanding:
                kind = r.kind
                setattr(out, f"{kind}_req_valid", True)
                setattr(out, f"{kind}_req_addr", r.addr)
                setattr(out, f"{kind}_req_beats", r.beats)
                accepted = inputs.rd_req_ready if kind == "rd" else inputs.wr_req_ready
                if accepted:
                    issued += 1
                    current = r.index
        out.wr_data_valid = True
        out.wr_data, out.wr_strb = 0x0102030405060708, 0xFF
        before = [q.last_beat for q in mem.requests]
        mem.sample(cycle, out)
        for q, old in zip(mem.requests, before):
            if q.last_beat >= 0 and old < 0:
                ends[q.addr] = cycle + 1
        cycle += 1
    return ends


def test_one_instruction_takes_latency_plus_beats(hw):
    for op, rows, cols in ((Op.LOAD_A, 3, 12), (Op.STORE_C, 2, 5), (Op.LOAD_B, 1, 1)):
        instr = Instr(op, addr=64, stride=64, rows=rows, cols=cols)
        program = Program(instrs=[instr])
        mem = MemoryModel(np.zeros(1024, np.uint8), hw)
        ends = run_ideal_dma(program, hw, mem)
        assert max(ends.values()) == latency(instr, hw)
        assert mem.requests[0].first_beat == hw.dram.latency_cycles


def test_back_to_back_instructions_match_the_simpy_model(hw):
    instrs = [Instr(Op.LOAD_A, addr=0, stride=16, rows=2, cols=16),
              Instr(Op.STORE_C, addr=512, stride=32, rows=2, cols=3),
              Instr(Op.LOAD_A, addr=128, stride=9, rows=3, cols=9)]
    program = Program(instrs=instrs, tags=[0, 0, 0])
    mem = MemoryModel(np.zeros(1024, np.uint8), hw)
    run_ideal_dma(program, hw, mem)
    obs = match_dma(program, hw, mem.requests, origin=0)
    assert not obs.errors
    trace = run_program(program, hw, trace=True).trace
    assert [obs.timing[i] for i in range(3)] == [tuple(t) for t in trace]


def test_write_beats_honour_strobes_and_respond_after_the_last(hw):
    data = np.zeros(64, np.uint8)
    mem = MemoryModel(data, hw)
    mem.drive(0)
    mem.sample(0, MemoryOutputs(wr_req_valid=True, wr_req_addr=8, wr_req_beats=1))
    for c in range(1, hw.dram.latency_cycles):
        assert not mem.drive(c).wr_data_ready
        mem.sample(c, MemoryOutputs())
    c = hw.dram.latency_cycles
    assert mem.drive(c).wr_data_ready
    mem.sample(c, MemoryOutputs(wr_data_valid=True, wr_data=0x1122334455667788, wr_strb=0b101))
    assert data[8:11].tolist() == [0x88, 0, 0x66]
    assert mem.drive(c + 1).wr_resp_valid and mem.requests[0].last_beat == c


def test_backpressure_never_withdraws_an_offered_beat(hw):
    data = np.arange(256, dtype=np.uint8)
    mem = MemoryModel(data, hw, backpressure=0.5, seed=3)
    rng = random.Random(1)
    c = 0
    while not mem.requests:  # the request itself may be held off
        mem.drive(c)
        mem.sample(c, MemoryOutputs(rd_req_valid=True, rd_req_addr=0, rd_req_beats=8))
        c += 1
    rule = StreamRule("mem_rd_data")
    beats = []
    first = c
    for c in range(first, first + 200):
        inputs = mem.drive(c)
        ready = rng.random() < 0.5
        rule.check(c, inputs.rd_data_valid, ready, inputs.rd_data)  # raises if withdrawn
        if inputs.rd_data_valid and ready:
            beats.append(inputs.rd_data)
        mem.sample(c, MemoryOutputs(rd_data_ready=ready))
    assert beats == [int.from_bytes(bytes(data[8 * i:8 * i + 8]), "little") for i in range(8)]


def test_out_of_range_request_is_a_protocol_error(hw):
    mem = MemoryModel(np.zeros(64, np.uint8), hw)
    mem.drive(0)
    with pytest.raises(ProtocolError, match="beyond the 0x40-byte DRAM image"):
        mem.sample(0, MemoryOutputs(rd_req_valid=True, rd_req_addr=60, rd_req_beats=1))


def test_stream_rule_flags_changed_payload():
    rule = StreamRule("mem_wr_data")
    rule.check(0, True, False, 5)
    with pytest.raises(ProtocolError, match="payload changed from 0x5 to 0x6"):
        rule.check(1, True, True, 6)


def test_monitor_reports_wrong_address(hw):
    program = Program(instrs=[Instr(Op.LOAD_A, addr=0, stride=16, rows=2, cols=8)], tags=[0])
    mem = MemoryModel(np.zeros(256, np.uint8), hw)
    for c, addr in enumerate((0, 24)):
        mem.drive(c)
        mem.sample(c, MemoryOutputs(rd_req_valid=True, rd_req_addr=addr, rd_req_beats=1))
    obs = match_dma(program, hw, mem.requests, origin=0)
    assert obs.errors == ["request 1: expected rd addr=0x10 beats=1 (instruction 0 LOAD_A row 1), "
                          "got rd addr=0x18 beats=1 in cycle 1"]
    assert obs.timing == {}


def test_result_verdicts():
    base = dict(seed=1, kind="dense", hardware="tiny", description="", instructions=4,
                model_cycles=100)
    ok = ProgramResult(**base, rtl_cycles=100, busy_cycles=100)
    assert ok.ok and ok.cycle_diff == 0
    late = ProgramResult(**base, rtl_cycles=101, busy_cycles=101)
    assert not late.ok and late.cycle_diff == 1
    assert "RTL took 101 cycles; archsim predicts 100 (tolerance 0)" in late.summary()
    assert "busy fell in cycle 101; expected 100" in late.summary()
    # The last write response arrives in the program's last cycle at the latest: busy falls then.
    held = ProgramResult(**base, rtl_cycles=100, busy_cycles=101, last_response=100)
    assert not held.ok
    assert "busy fell in cycle 101; expected 100; the last write response was taken in cycle " \
           "100" in held.summary()
    early = ProgramResult(**base, rtl_cycles=100, busy_cycles=99, last_response=98)
    assert not early.ok
    stretched = ProgramResult(**base, backpressure=True, rtl_cycles=180, busy_cycles=180)
    assert stretched.ok and stretched.cycle_diff is None
    wrong = ProgramResult(**base, backpressure=True, rtl_cycles=180, value_mismatches=1)
    assert not wrong.ok
    assert ProgramResult.from_json(late.to_json()) == late


def test_expected_requests_add_up_to_the_cost_model(hw):
    # latency + all beats back to back = dataflows.cost.latency, for every DMA instruction.
    for instr in (Instr(Op.LOAD_A, rows=3, cols=13), Instr(Op.LOAD_B, rows=2, cols=4),
                  Instr(Op.LOAD_B, rows=4, cols=4, nm_n=2, nm_m=8),
                  Instr(Op.STORE_C, rows=5, cols=3), Instr(Op.STORE_B, rows=2, cols=4, nm_n=1,
                                                           nm_m=4),
                  Instr(Op.LOAD_MASK, rows=6, cols=20)):
        reqs = expected_requests(Program(instrs=[instr]), hw)
        assert hw.dram.latency_cycles + sum(r.beats for r in reqs) == latency(instr, hw), instr
        assert len(reqs) == (1 if instr.op == Op.LOAD_MASK else instr.rows)
