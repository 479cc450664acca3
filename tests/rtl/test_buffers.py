"""The double-buffered SRAMs: what is written comes back, per slot, one cycle after the read."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from rtl.buffers import AccumulatorBuffer, InputBuffer, WeightBuffer
from rtl.params import Geometry
from workloads.load import load_hardware

TINY = load_hardware("tiny")
G = Geometry.of(TINY)


def _sim(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_input_rows_of_every_pitch_read_back_whole():
    buf = InputBuffer(TINY)
    rng = np.random.default_rng(1)
    width = G.rows * G.a_banks
    # (slot, pitch, rows): rows of 4, 8 and 16 operands share addresses 4, 2 and 1 to a word.
    plan = [(0, 0, 9), (1, 1, 5), (0, 2, 3), (1, 2, 2)]
    expected: dict[tuple[int, int], list[int]] = {}

    async def bench(ctx):
        for slot, pitch, rows in plan:
            for row in range(rows):
                data = [int(v) for v in rng.integers(-128, 128, size=width)]
                ctx.set(buf.write.en, 1)
                ctx.set(buf.write.slot, slot)
                ctx.set(buf.write.row, row)
                ctx.set(buf.write.pitch, pitch)
                ctx.set(buf.write.data, data)
                await ctx.tick()
                expected[slot, row] = data[: G.rows << pitch]
            ctx.set(buf.write.en, 0)
            # Read back this slot (its pitch is the one just written) while the other is idle.
            for row in range(rows):
                ctx.set(buf.read.en, 1)
                ctx.set(buf.read.slot, slot)
                ctx.set(buf.read.row, row)
                await ctx.tick()
                ctx.set(buf.read.en, 0)
                got = [ctx.get(buf.read.data[e]) for e in range(G.rows << pitch)]
                assert got == expected[slot, row], (slot, pitch, row)

    _sim(buf, bench)


def test_input_reads_of_several_parts_take_each_from_its_bank_group():
    """Several kernel offsets per COMPUTE (docs/isa.md): with rows of ``2^p`` banks, ``parts``
    rows in distinct bank groups (``row mod a_banks/2^p``) come back side by side in one read,
    part ``j`` at words ``j·2^p ..``, a part flagged ``zero`` as zeros."""
    buf = InputBuffer(TINY)
    rng = np.random.default_rng(3)
    width = G.rows * G.a_banks
    # (pitch, [(row, zero) per part]): 4 one-bank parts in groups 1, 2, 3, 0; two two-bank
    # parts in groups 1, 0 (one a padding pixel); a single two-bank row through the same port.
    plan = [(0, [(5, False), (10, False), (7, True), (12, False)]),
            (1, [(3, False), (6, True)]),
            (1, [(9, False)])]

    async def bench(ctx):
        for pitch, parts in plan:
            stored = {}
            for row in range(14):
                data = [int(v) for v in rng.integers(-128, 128, size=width)]
                ctx.set(buf.write.en, 1)
                ctx.set(buf.write.slot, 0)
                ctx.set(buf.write.row, row)
                ctx.set(buf.write.pitch, pitch)
                ctx.set(buf.write.data, data)
                await ctx.tick()
                stored[row] = data[: G.rows << pitch]
            ctx.set(buf.write.en, 0)
            ctx.set(buf.read.en, 1)
            ctx.set(buf.read.slot, 0)
            ctx.set(buf.read.row, parts[0][0])
            for j, (row, _) in enumerate(parts[1:]):
                ctx.set(buf.read.more[j], row)
            ctx.set(buf.read.parts, len(parts) if len(parts) > 1 else 0)
            ctx.set(buf.read.zero, sum(1 << j for j, (_, z) in enumerate(parts) if z))
            await ctx.tick()
            ctx.set(buf.read.en, 0)
            span = G.rows << pitch
            got = [ctx.get(buf.read.data[e]) for e in range(span * len(parts))]
            want = [v for row, zero in parts for v in ([0] * span if zero else stored[row])]
            assert got == want, (pitch, parts)

    _sim(buf, bench)


def test_weight_rows_blocks_and_masked_bank_writes():
    buf = WeightBuffer(TINY)
    rng = np.random.default_rng(2)
    rows = {}

    def entries(values, indices):
        return [{"value": int(v), "index": int(i)} for v, i in zip(values, indices)]

    async def bench(ctx):
        for r in range(G.k_max):
            values = rng.integers(-128, 128, size=G.cols)
            indices = rng.integers(0, 8, size=G.cols)
            rows[r] = (list(values), list(indices))
            ctx.set(buf.dma_wr.en, 1)
            ctx.set(buf.dma_wr.slot, 1)
            ctx.set(buf.dma_wr.row, r)
            ctx.set(buf.dma_wr.data, entries(values, indices))
            await ctx.tick()
        ctx.set(buf.dma_wr.en, 0)
        for reader in (buf.pe_rd, buf.dma_rd):
            for r in range(G.k_max):
                ctx.set(reader.en, 1)
                ctx.set(reader.slot, 1)
                ctx.set(reader.row, r)
                await ctx.tick()
                ctx.set(reader.en, 0)
                await ctx.tick()  # data hold while en is low
                got = [ctx.get(reader.data[j].value) for j in range(G.cols)]
                assert got == rows[r][0], r
        # A block read returns b_banks consecutive rows.
        ctx.set(buf.vec_rd.en, 1)
        ctx.set(buf.vec_rd.slot, 1)
        ctx.set(buf.vec_rd.block, 1)
        await ctx.tick()
        ctx.set(buf.vec_rd.en, 0)
        for b in range(G.b_banks):
            got = [ctx.get(buf.vec_rd.data[b][j].value) for j in range(G.cols)]
            assert got == rows[G.b_banks + b][0]
        # Bank writes touch only the masked columns.
        ctx.set(buf.vec_wr.slot, 1)
        ctx.set(buf.vec_wr.mask[3], 0b0101)
        ctx.set(buf.vec_wr.addr[3], 0)
        ctx.set(buf.vec_wr.data[3], entries([7, 7, 7, 7], [1, 1, 1, 1]))
        await ctx.tick()
        ctx.set(buf.vec_wr.mask[3], 0)
        ctx.set(buf.pe_rd.en, 1)
        ctx.set(buf.pe_rd.row, 3)
        await ctx.tick()
        got = [ctx.get(buf.pe_rd.data[j].value) for j in range(G.cols)]
        old = rows[3][0]
        assert got == [7, old[1], 7, old[3]]

    _sim(buf, bench)


def test_accumulator_columns_have_their_own_addresses():
    buf = AccumulatorBuffer(TINY)

    async def bench(ctx):
        # Column j writes row j (a skewed schedule), in slot 0.
        ctx.set(buf.pe_wr.slot, 0)
        ctx.set(buf.pe_wr.en, (1 << G.cols) - 1)
        for j in range(G.cols):
            ctx.set(buf.pe_wr.addr[j], j)
            ctx.set(buf.pe_wr.data[j], -1000 * (j + 1))
        await ctx.tick()
        ctx.set(buf.pe_wr.en, 0)
        for row in range(G.cols):
            ctx.set(buf.dma_rd.en, 1)
            ctx.set(buf.dma_rd.row, row)
            await ctx.tick()
            got = [ctx.get(buf.dma_rd.data[j]) for j in range(G.cols)]
            assert got[row] == -1000 * (row + 1)
        ctx.set(buf.dma_rd.en, 0)
        ctx.set(buf.pe_rd.en, 1)
        for j in range(G.cols):
            ctx.set(buf.pe_rd.addr[j], j)
        await ctx.tick()
        assert [ctx.get(buf.pe_rd.data[j]) for j in range(G.cols)] == [
            -1000 * (j + 1) for j in range(G.cols)]

    _sim(buf, bench)
