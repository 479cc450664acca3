"""The program layer: waits derived from declared slot accesses, one allocator, typed segments."""

from __future__ import annotations

import pytest

from dataflows.attention import PHASES, AttentionWork
from dataflows.isa import ConvAddress, Op
from dataflows.program import ALIGN, Allocator, Buffer, Emitter
from dataflows.scheduler import GemmWork, PregenWork, schedule
from workloads.load import load_workload


def test_read_waits_for_the_writer_and_write_for_readers_and_writer():
    em = Emitter()
    a, b, acc = em.slot("A", 0), em.slot("B", 0), em.slot("C", 0)
    em.emit(Op.LOAD_A, 0, writes=(a,), rows=1, cols=1)  # DMA 0
    em.emit(Op.LOAD_B, 0, writes=(b,), rows=1, cols=1)  # DMA 1
    em.emit(Op.COMPUTE, 0, reads=(a, b), writes=(acc,), m=1)  # PE 0: waits for both loads
    em.emit(Op.STORE_C, 0, reads=(acc,), rows=1, cols=1)  # DMA 2: waits for the compute
    em.emit(Op.COMPRESS, 0, reads=(b,), writes=(b,), rows=1, cols=1)  # VEC 0: RAW, WAR, WAW
    em.emit(Op.LOAD_B, 0, writes=(b,), rows=1, cols=1)  # DMA 3: after COMPRESS (WAW)
    waits = [i.wait for i in em.program.instrs]
    assert waits == [(0, 0, 0), (0, 0, 0), (2, 0, 0), (0, 1, 0), (2, 1, 0), (0, 0, 1)]


def test_waits_on_the_own_unit_are_dropped():
    em = Emitter()
    a = em.slot("A", 0)
    em.emit(Op.LOAD_A, 0, writes=(a,))
    em.emit(Op.LOAD_A, 0, writes=(a,))  # program order already orders two DMA instructions
    assert em.program.instrs[1].wait == (0, 0, 0)


def test_a_write_clears_the_readers_it_waited_for():
    em = Emitter()
    a, acc = em.slot("A", 0), em.slot("C", 0)
    em.emit(Op.LOAD_A, 0, writes=(a,))  # DMA 0
    em.emit(Op.COMPUTE, 0, reads=(a,), writes=(acc,))  # PE 0
    em.emit(Op.LOAD_A, 0, writes=(a,))  # DMA 1 waits for PE 0
    em.emit(Op.COMPUTE, 0, reads=(a,), writes=(acc,))  # PE 1 waits for DMA 1
    em.emit(Op.ROWMAX, 0, reads=(acc,))  # VEC 0 waits for PE 1 (the last writer)
    assert [i.wait for i in em.program.instrs] == [
        (0, 0, 0), (1, 0, 0), (0, 1, 0), (2, 0, 0), (0, 2, 0)]


def test_a_compute_from_positional_fields_equals_one_from_keywords():
    # emit_compute (the scheduler's fast path) lists Instr's fields by position: it must build
    # the instruction emit builds from the same fields by name, waits and sharing included.
    conv = ConvAddress(stride=1, in_h=9, in_w=9, out_h=9, out_w=9, oh0=2, lo=1, dh=1, dw=2)
    fields = dict(slot=1, b_slot=0, c_slot=1, accumulate=True, cols=13, k=6, nm_n=2, nm_m=8,
                  a_row=300, b_row=7, c_row=4000, conv=conv)
    built = []
    for positional in (False, True):
        em = Emitter()
        a, b, acc = em.slot("A", 1), em.slot("B", 0), em.slot("C", 1)
        em.emit(Op.LOAD_A, 0, writes=(a,), rows=1, cols=1)
        em.emit(Op.LOAD_B, 0, writes=(b,), rows=1, cols=1)
        if positional:
            em.emit_compute(3, (a, b, acc), acc, m=17, **fields)
        else:
            em.emit(Op.COMPUTE, 3, reads=(a, b, acc), writes=(acc,), rows=17, m=17, **fields)
        em.emit(Op.STORE_C, 0, reads=(acc,), rows=1, cols=1)
        built.append((em.program.instrs, em.program.tags, acc.writer, a.readers))
    assert built[0] == built[1]
    assert built[1][0][2].conv == conv and built[1][0][2].wait == (2, 0, 0)


@pytest.mark.parametrize("op, fields", [
    (Op.LOAD_A, dict(slot=1, addr=4096, stride=96, rows=17, cols=13, k=16, a_row=300)),
    (Op.LOAD_B, dict(slot=0, addr=64, stride=8, rows=6, cols=32, nm_n=2, nm_m=8, b_row=7)),
    (Op.STORE_C, dict(slot=1, addr=128, stride=40, rows=5, cols=9, c_row=4000, requant=True,
                      shift=3)),
])
def test_a_transfer_from_named_fields_equals_one_from_a_dict(op, fields):
    # emit_transfer (the GEMM writers' loads and stores) lists Instr's fields by position: it
    # must build the instruction emit builds from the same fields, waits and sharing included.
    built = []
    for named in (False, True):
        em = Emitter()
        a, acc = em.slot("A", 1), em.slot("C", 1)
        em.emit(Op.COMPUTE, 0, reads=(a,), writes=(acc,), rows=1, m=1)
        reads, writes = ((acc,), ()) if op == Op.STORE_C else ((), (a,))
        if named:
            em.emit_transfer(op, 2, reads, writes, **fields)
        else:
            em.emit(op, 2, reads=reads, writes=writes, **fields)
        built.append((em.program.instrs, em.program.tags, acc.readers, a.writer))
    assert built[0] == built[1]
    assert built[1][0][1].wait == (0, 1, 0)


def test_allocator_aligns_every_tensor():
    dram = Allocator()
    x = dram.alloc("x", 3, 5, 1)
    y = dram.alloc("y", 2, 2, 6)
    z = dram.alloc("z", 1, 1, 1, "nm_tiles", nbytes=100)
    assert (x.addr, y.addr, z.addr) == (0, ALIGN, 2 * ALIGN)
    assert (x.nbytes, y.stride, z.nbytes, dram.end) == (15, 12, 100, 2 * ALIGN + 100)


def test_buffer_never_claims_a_live_slot():
    buf = Buffer(2)
    first = buf.claim_free()
    buf.slots[first].resident = ("acc", 0)
    second = buf.claim_free()
    buf.slots[second].resident = ("acc", 1)
    assert first != second and buf.holding(("acc", 1)) == second
    buf.slots[first].resident = None
    assert buf.claim_free() == first


def test_every_segment_says_what_its_tags_index():
    workload = load_workload("workloads/examples/attention_bert.yaml")
    sched = schedule(workload)
    kinds = {type(s.work) for s in sched.segments}
    assert kinds == {GemmWork, AttentionWork}
    for segment in sched.segments:
        names = segment.work.tag_names
        assert all(0 <= t < len(names) for t in segment.program.tags)
    attention = sched.of(AttentionWork)
    assert attention and attention[0].work.tag_names == PHASES


def test_pregeneration_segments_tag_their_weight():
    workload = load_workload("workloads/examples/resnet18_bdwp.yaml")
    pregen = schedule(workload).of(PregenWork)
    assert pregen
    for segment in pregen:
        (task,) = segment.work.tasks
        assert segment.work.tag_names == (task.weight,)
        assert set(segment.program.tags) == {0}


def test_parts_of_a_slot_have_their_own_hazards_and_inherit_the_slots_past():
    em = Emitter()
    a = em.buffers["A"]
    a.place(0)
    em.emit(Op.LOAD_A, 0, writes=(a.part(0, (0,)),), slot=0)  # DMA 0
    em.emit(Op.LOAD_A, 0, writes=(a.part(0, (1,)),), slot=0, a_row=4)  # DMA 1
    # A COMPUTE on chunk 0 waits for chunk 0's load only, not for the whole slot.
    em.emit(Op.COMPUTE, 0, reads=(a.part(0, (0,)),), slot=0)  # PE 0
    em.emit(Op.COMPUTE, 0, reads=(a.part(0, (1,)),), slot=0, a_row=4)  # PE 1
    # A new tile in the slot: its first part's load waits for every reader of the old tile.
    a.place(0)
    em.emit(Op.LOAD_A, 0, writes=(a.part(0, (0,)),), slot=0)
    waits = [i.wait for i in em.program.instrs]
    assert waits == [(0, 0, 0), (0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 2, 0)]


def test_what_a_program_remembers_follows_its_growth():
    """``Program.derived`` (unit queues, shape index) is recomputed once the program grows: a
    build stopped part way is timed, then resumed."""
    from dataflows.cost import latencies, shape_index
    from dataflows.isa import Instr, Op, Unit
    from dataflows.program import Program
    from workloads.load import load_hardware

    hw = load_hardware("tiny")
    program = Program([Instr(Op.LOAD_A, rows=4, cols=4), Instr(Op.COMPUTE, m=4, k=4, cols=4)],
                      [0, 0])
    assert list(program.per_unit()[Unit.PE]) == [1] and len(latencies(program, hw)) == 2
    program.instrs.append(Instr(Op.LOAD_A, rows=8, cols=4))
    program.tags.append(0)
    assert list(program.per_unit()[Unit.DMA]) == [0, 2]
    ids, examples = shape_index(program)
    assert list(ids) == [0, 1, 2] and len(examples) == 3
    assert latencies(program, hw)[2] > latencies(program, hw)[0]  # more rows, more beats


def test_what_a_grown_program_remembers_equals_a_fresh_derivation():
    """Queues and shape index extended as a program grows (past 256 shapes, where the index
    widens) equal those derived at once from the finished program."""
    from dataflows.cost import shape_index
    from dataflows.isa import Instr, Op
    from dataflows.program import Program

    ops = (Op.LOAD_A, Op.COMPUTE, Op.STORE_C, Op.COMPRESS)
    instrs = [Instr(ops[i % 4], rows=1 + i % 300, cols=4, m=1 + i % 7, k=4) for i in range(900)]
    grown = Program()
    for start in range(0, 900, 97):  # a build stopped and resumed, timed at every stop
        grown.instrs.extend(instrs[start:start + 97])
        grown.tags.extend([0] * len(instrs[start:start + 97]))
        grown.per_unit(), shape_index(grown)
    fresh = Program(list(instrs), [0] * 900)
    assert {u: list(q) for u, q in grown.per_unit().items()} == {
        u: list(q) for u, q in fresh.per_unit().items()}
    (g_ids, g_examples), (f_ids, f_examples) = shape_index(grown), shape_index(fresh)
    assert len(f_examples) > 256 and g_ids.typecode == f_ids.typecode == "H"
    assert list(g_ids) == list(f_ids) and g_examples == f_examples
