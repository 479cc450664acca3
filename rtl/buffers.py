"""Double-buffered on-chip SRAMs: input (A), weight (B) and accumulator (C), two slots each.

Each slot is its own set of ``amaranth.lib.memory.Memory`` banks with one read and one write
port, so units that work on different slots (the DMA filling slot 1 while the array reads slot 0)
never contend. Two units never touch the same slot at once: the program's completion-count waits
order them (docs/isa.md), so the port multiplexers below are plain priority selects.

Every read port is synchronous: data arrive in the cycle after the address and stay put while the
reader keeps ``en`` low. That one cycle is part of each unit's latency in ``dataflows.cost``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In

from rtl import layouts
from rtl.params import Geometry, ceil_log2
from workloads.arith import ceil_div
from workloads.spec import HardwareSpec

__all__ = ["InputBuffer", "WeightBuffer", "AccumulatorBuffer", "MaskBuffer"]


class InputBuffer(wiring.Component):
    """The activation SRAM: ``a_banks`` banks of ``rows`` operands per slot.

    A row occupies ``2**pitch`` consecutive banks at one address (``pitch`` comes with each
    write: the DMA derives it from the row's length), so ``a_banks >> pitch`` rows share an
    address and any row, however wide, is read in one cycle. Each slot remembers the pitch of its
    last write, which is how a COMPUTE finds the rows a LOAD_A left there.

    Attributes
    ----------
    write : In(InputWriteSignature)
        The DMA's row writes.
    read : In(InputReadSignature)
        The compute unit's row reads.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        super().__init__({
            "write": In(layouts.InputWriteSignature(g)),
            "read": In(layouts.InputReadSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        banks, lg = g.a_banks, ceil_log2(g.a_banks)
        word = data.ArrayLayout(signed(g.data_bits), g.rows)
        pitch = Array(Signal(len(self.write.pitch), name=f"pitch_{s}") for s in range(2))

        def place(row, shift):
            linear = row << shift
            return linear >> lg, linear[:lg] if lg else Const(0, 1)

        w_addr, w_off = place(self.write.row, self.write.pitch)
        words = [self.write.data.as_value()[w * word.size : (w + 1) * word.size]
                 for w in range(banks)]
        with m.If(self.write.en):
            m.d.sync += pitch[self.write.slot].eq(self.write.pitch)

        bank_addr, offs, sel = self._read_parts(m, place, pitch)

        # Bank b takes word b - offset of the row, if the row reaches that far.
        span = Signal(range(banks + 1))
        m.d.comb += span.eq(1 << self.write.pitch)
        rel = [Signal(range(banks), name=f"rel_{b}") for b in range(banks)]
        m.d.comb += [rel[b].eq(b - w_off) for b in range(banks)]
        out = [[None] * banks for _ in range(2)]
        for s in range(2):
            for b in range(banks):
                mem = memory.Memory(shape=word, depth=g.a_depth, init=[])
                m.submodules[f"slot{s}_bank{b}"] = mem
                wp, rp = mem.write_port(), mem.read_port()
                m.d.comb += [
                    # (w_off <= b is constant for the last bank: leave it out.)
                    wp.en.eq(self.write.en & (self.write.slot == s)
                             & ((w_off <= b) if b < banks - 1 else 1) & (rel[b] < span)),
                    wp.addr.eq(w_addr),
                    wp.data.eq(Array(words)[rel[b]]),
                    rp.addr.eq(bank_addr[b]),
                    rp.en.eq(self.read.en & (self.read.slot == s)),
                ]
                out[s][b] = rp.data.as_value()
        # Word w of the row comes from the bank ``sel`` picked for it (see _read_parts).
        slot_q = Signal()
        with m.If(self.read.en):
            m.d.sync += slot_q.eq(self.read.slot)
        choices = Array(Array(out[s][b] for b in range(banks)) for s in range(2))
        for w in range(banks):
            lo = w * word.size
            bank, zero = sel(w)
            m.d.comb += self.read.data.as_value()[lo : lo + word.size].eq(
                Mux(zero, 0, choices[slot_q][bank]))
        return m

    def _read_parts(self, m: Module, place, pitch):
        """Per bank its read address, and ``sel(w)``: (bank, zeroed) of data word ``w`` a
        cycle later. One row: every bank at the row's address, word w from bank ``offset + w``
        (rotated). Several parts (``read.parts > 1``): bank b at the address of the part in
        its bank group (``offset div 2^p`` equal; the program keeps parts in distinct
        groups), word w from part ``w div 2^p``'s bank ``offset | w mod 2^p``, zero where
        that part's ``zero`` bit is set."""
        g, rd = self._g, self.read
        banks, lg = g.a_banks, ceil_log2(g.a_banks)
        p = pitch[rd.slot]
        rows = [rd.row] + [rd.more[j] for j in range(banks - 1)]
        placed = [place(r, p) for r in rows]
        multi = rd.parts > 1
        bank_addr = []
        for b in range(banks):
            addr = placed[0][0]
            for j in range(1, banks):
                same_group = ((placed[j][1] ^ b) >> p) == 0
                addr = Mux(multi & (j < rd.parts) & same_group, placed[j][0], addr)
            bank_addr.append(addr)
        offs_q = [Signal(max(1, lg), name=f"off_q{j}") for j in range(banks)]
        multi_q, pitch_q, zero_q = Signal(), Signal.like(p), Signal.like(rd.zero)
        with m.If(rd.en):
            m.d.sync += [o.eq(pl[1]) for o, pl in zip(offs_q, placed)]
            m.d.sync += [multi_q.eq(multi), pitch_q.eq(p), zero_q.eq(rd.zero)]

        def sel(w: int):
            if lg == 0:
                return Const(0, 1), Const(0, 1)
            part = Const(w, lg) >> pitch_q
            within = Const(w, lg) & ((Const(1, lg + 1) << pitch_q) - 1)
            bank = Mux(multi_q, Array(offs_q)[part] | within, (offs_q[0] + w)[:lg])
            return bank, multi_q & Array(zero_q[j] for j in range(banks))[part]
        return bank_addr, offs_q, sel


class WeightBuffer(wiring.Component):
    """The weight SRAM: ``b_banks`` banks per slot, row ``r`` in bank ``r % b_banks``.

    Rows hold one entry (value and index) per array column; writes are per column so the vector
    unit can store the columns its lanes finished.

    Attributes
    ----------
    dma_wr, dma_rd : In(WeightRowWriteSignature / WeightRowReadSignature)
        LOAD_B writes rows; STORE_B reads them.
    pe_rd : In(WeightRowReadSignature)
        The compute unit preloads the array from it.
    vec_rd, vec_wr : In(WeightBlockReadSignature / WeightBankWriteSignature)
        COMPRESS reads ``b_banks`` rows at once and writes compressed rows in place.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        super().__init__({
            "dma_wr": In(layouts.WeightRowWriteSignature(g)),
            "dma_rd": In(layouts.WeightRowReadSignature(g)),
            "pe_rd": In(layouts.WeightRowReadSignature(g)),
            "vec_rd": In(layouts.WeightBlockReadSignature(g)),
            "vec_wr": In(layouts.WeightBankWriteSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        banks, lg = g.b_banks, ceil_log2(g.b_banks)

        def split(row):
            return (row >> lg), (row[:lg] if lg else Const(0, 1))

        row_readers = (self.pe_rd, self.dma_rd)
        held = []  # (slot, bank) each row reader read last, for its data mux
        for reader in row_readers:
            slot_q, bank_q = Signal(), Signal(max(1, lg))
            with m.If(reader.en):
                m.d.sync += [slot_q.eq(reader.slot), bank_q.eq(split(reader.row)[1])]
            held.append((slot_q, bank_q))
        vec_slot_q = Signal()
        with m.If(self.vec_rd.en):
            m.d.sync += vec_slot_q.eq(self.vec_rd.slot)

        d_addr, d_bank = split(self.dma_wr.row)
        out = [[None] * banks for _ in range(2)]
        for s in range(2):
            for b in range(banks):
                mem = memory.Memory(shape=layouts.weight_row(g), depth=g.b_depth, init=[])
                m.submodules[f"slot{s}_bank{b}"] = mem
                wp, rp = mem.write_port(granularity=1), mem.read_port()
                with m.If(self.dma_wr.en & (self.dma_wr.slot == s) & (d_bank == b)):
                    m.d.comb += [wp.en.eq(-1), wp.addr.eq(d_addr), wp.data.eq(self.dma_wr.data)]
                with m.Elif(self.vec_wr.slot == s):
                    m.d.comb += [wp.en.eq(self.vec_wr.mask[b]), wp.addr.eq(self.vec_wr.addr[b]),
                                 wp.data.eq(self.vec_wr.data[b])]
                # Read address: whichever client reads this slot (never more than one). A memory
                # read port's enable defaults to 1: hold the data explicitly when nobody reads.
                m.d.comb += rp.en.eq(0)
                with m.If(self.pe_rd.en & (self.pe_rd.slot == s)):
                    m.d.comb += [rp.en.eq(1), rp.addr.eq(split(self.pe_rd.row)[0])]
                with m.Elif(self.dma_rd.en & (self.dma_rd.slot == s)):
                    m.d.comb += [rp.en.eq(1), rp.addr.eq(split(self.dma_rd.row)[0])]
                with m.Elif(self.vec_rd.en & (self.vec_rd.slot == s)):
                    m.d.comb += [rp.en.eq(1), rp.addr.eq(self.vec_rd.block)]
                out[s][b] = rp.data.as_value()
        table = Array(Array(out[s]) for s in range(2))
        for reader, (slot_q, bank_q) in zip(row_readers, held):
            m.d.comb += reader.data.eq(table[slot_q][bank_q])
        for b in range(banks):
            m.d.comb += self.vec_rd.data[b].eq(table[vec_slot_q][b])
        return m


class AccumulatorBuffer(wiring.Component):
    """The accumulator SRAM: one bank per array column per slot, ``acc_bits`` wide.

    The compute unit reads and writes each column at its own address (columns finish at skewed
    times); STORE_C reads a whole row; the vector unit's softmax passes read whole rows and
    write back the columns of the lanes they worked on.

    Attributes
    ----------
    pe_rd, pe_wr : In(AccReadSignature / AccWriteSignature)
        Read-add-write of the compute unit.
    dma_rd : In(AccRowReadSignature)
        STORE_C's row reads.
    vec_rd, vec_wr : In(AccRowReadSignature / AccWriteSignature)
        ROWMAX/EXP read score rows; RESCALE/NORMALIZE read and rewrite output rows.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        super().__init__({
            "pe_rd": In(layouts.AccReadSignature(g)),
            "pe_wr": In(layouts.AccWriteSignature(g)),
            "dma_rd": In(layouts.AccRowReadSignature(g)),
            "vec_rd": In(layouts.AccRowReadSignature(g)),
            "vec_wr": In(layouts.AccWriteSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        readers = (self.pe_rd, self.dma_rd, self.vec_rd)
        held = [Signal(name=f"slot_q_{i}") for i in range(len(readers))]
        for reader, slot_q in zip(readers, held):
            with m.If(reader.en):
                m.d.sync += slot_q.eq(reader.slot)
        for j in range(g.cols):
            out = []
            for s in range(2):
                mem = memory.Memory(shape=signed(g.acc_bits), depth=g.c_depth, init=[])
                m.submodules[f"slot{s}_col{j}"] = mem
                wp, rp = mem.write_port(), mem.read_port()
                with m.If(self.vec_wr.en[j] & (self.vec_wr.slot == s)):
                    m.d.comb += [wp.en.eq(1), wp.addr.eq(self.vec_wr.addr[j]),
                                 wp.data.eq(self.vec_wr.data[j])]
                with m.Else():
                    m.d.comb += [
                        wp.en.eq(self.pe_wr.en[j] & (self.pe_wr.slot == s)),
                        wp.addr.eq(self.pe_wr.addr[j]),
                        wp.data.eq(self.pe_wr.data[j]),
                    ]
                m.d.comb += rp.en.eq(0)  # the port's enable defaults to 1
                with m.If(self.dma_rd.en & (self.dma_rd.slot == s)):
                    m.d.comb += [rp.en.eq(1), rp.addr.eq(self.dma_rd.row)]
                with m.Elif(self.vec_rd.en & (self.vec_rd.slot == s)):
                    m.d.comb += [rp.en.eq(1), rp.addr.eq(self.vec_rd.row)]
                with m.Elif(self.pe_rd.en & (self.pe_rd.slot == s)):
                    m.d.comb += [rp.en.eq(1), rp.addr.eq(self.pe_rd.addr[j])]
                out.append(rp.data)
            for reader, slot_q in zip(readers, held):
                m.d.comb += reader.data[j].eq(Array(out)[slot_q])
        return m


class MaskBuffer(wiring.Component):
    """The vector unit's mask store: two slots of LOAD_MASK beats, kept as they arrived.

    Each slot is two banks, even and odd words, so the word pair a mask row may straddle is
    read in one cycle (``MaskReadSignature``).

    Attributes
    ----------
    dma_wr : In(MaskWriteSignature)
        LOAD_MASK's beats.
    vec_rd : In(MaskReadSignature)
        ROWMAX/EXP read the word pair holding a mask row.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        super().__init__({
            "dma_wr": In(layouts.MaskWriteSignature(g)),
            "vec_rd": In(layouts.MaskReadSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        width = 8 * g.beat_bytes
        depth = ceil_div(g.mask_words, 2)
        word, slot_q, odd_q = self.vec_rd.word, Signal(), Signal()
        with m.If(self.vec_rd.en):
            m.d.sync += [slot_q.eq(self.vec_rd.slot), odd_q.eq(word[0])]
        out = [[None, None] for _ in range(2)]
        for s in range(2):
            for bank in range(2):
                mem = memory.Memory(shape=width, depth=depth, init=[])
                m.submodules[f"slot{s}_bank{bank}"] = mem
                wp, rp = mem.write_port(), mem.read_port()
                m.d.comb += [
                    wp.en.eq(self.dma_wr.en & (self.dma_wr.slot == s)
                             & (self.dma_wr.word[0] == bank)),
                    wp.addr.eq(self.dma_wr.word >> 1),
                    wp.data.eq(self.dma_wr.data),
                    # Word w is in bank w % 2 at w // 2: the pair (w, w + 1) is the even bank
                    # at (w + 1) // 2 and the odd bank at w // 2.
                    rp.addr.eq((word + (1 - bank)) >> 1),
                    rp.en.eq(self.vec_rd.en & (self.vec_rd.slot == s)),
                ]
                out[s][bank] = rp.data
        even = Array(out[s][0] for s in range(2))[slot_q]
        odd = Array(out[s][1] for s in range(2))[slot_q]
        m.d.comb += self.vec_rd.data.eq(Mux(odd_q, Cat(odd, even), Cat(even, odd)))
        return m
