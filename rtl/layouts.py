"""Payload layouts and port signatures shared by the RTL blocks, all derived from a Geometry.

Links that carry a flow of data (memory requests and beats, instructions, activations, partial
sums, weight loads) are :class:`amaranth.lib.stream.Signature` streams. Links to an SRAM are
memory-port signatures instead (address and enable out, data back one cycle later, no
handshake), like :class:`amaranth.lib.memory.ReadPort`: an SRAM never stalls, and the timing rule
of docs/isa.md needs its fixed one-cycle latency.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import FIELDS, WORD_BITS, Unit
from rtl.params import Geometry, ceil_log2

__all__ = [
    "UNIT_FIELDS",
    "OS_FIELDS",
    "instr_word",
    "unit_instr",
    "mem_request",
    "mem_read_beat",
    "mem_write_beat",
    "MEM_WRITE_RESPONSE",
    "act_vector",
    "os_step",
    "weight_entry",
    "weight_row",
    "weight_load",
    "IssueSignature",
    "InputWriteSignature",
    "InputReadSignature",
    "WeightRowWriteSignature",
    "WeightRowReadSignature",
    "WeightBlockReadSignature",
    "WeightBankWriteSignature",
    "AccReadSignature",
    "AccWriteSignature",
    "AccRowReadSignature",
    "MaskWriteSignature",
    "MaskReadSignature",
]

_WAITS = ("wait_dma", "wait_pe", "wait_vec")

#: The instruction fields each unit's instruction memory keeps (the rest of the word is unused
#: by that unit, so it is not stored).
UNIT_FIELDS: dict[Unit, tuple[str, ...]] = {
    Unit.DMA: ("op", "slot", "nm_n", "nm_m", *_WAITS, "addr", "stride", "rows", "cols", "k",
               "requant", "shift", "a_row", "b_row", "c_row"),
    Unit.PE: ("slot", "b_slot", "c_slot", "accumulate", "nm_n", "nm_m", *_WAITS, "cols", "k", "m",
              "a_row", "b_row", "c_row", "conv", "conv_stride", "conv_in_h", "conv_in_w",
              "conv_out_h", "conv_out_w", "conv_oh0", "conv_lo", "conv_dh", "conv_dw",
              "conv_ow0", "conv_b", "conv_group", "conv_kw", "conv_kw0", "conv_t", "conv_kh",
              "conv_chunk_rows"),
    Unit.VEC: ("op", "slot", "b_slot", "c_slot", "accumulate", "nm_n", "nm_m", *_WAITS, "rows",
               "cols", "k", "mask"),
}
#: The output-stationary array's reduction chunks and the address mode's first kernel row (its
#: walk over kernel offsets): kept by its PE unit only.
OS_FIELDS = ("chunks", "a_chunk_rows", "b_chunk_rows", "k_last", "conv_kh0")


def instr_word() -> data.StructLayout:
    """The fields of ``dataflows.isa.FIELDS`` from bit 0 upward (the low bits of a word)."""
    layout = data.StructLayout({name: unsigned(width) for name, width in FIELDS})
    assert layout.size <= WORD_BITS
    return layout


def unit_instr(unit: Unit, output_stationary: bool = False) -> data.StructLayout:
    """One entry of ``unit``'s instruction memory: the fields that unit executes (the PE unit
    of an output-stationary array also its reduction chunks)."""
    widths = dict(FIELDS)
    names = UNIT_FIELDS[unit] + (OS_FIELDS if unit == Unit.PE and output_stationary else ())
    return data.StructLayout({name: unsigned(widths[name]) for name in names})


def mem_request() -> data.StructLayout:
    """``mem_rd_req`` / ``mem_wr_req``: ``beats`` beats starting at byte ``addr``."""
    return data.StructLayout({"addr": unsigned(32), "beats": unsigned(16)})


def mem_read_beat(g: Geometry) -> data.StructLayout:
    """``mem_rd_data``: one beat of ``dram.bandwidth_bytes_per_cycle`` bytes."""
    return data.StructLayout({"data": unsigned(8 * g.beat_bytes)})


def mem_write_beat(g: Geometry) -> data.StructLayout:
    """``mem_wr_data``: one beat and its byte strobes."""
    return data.StructLayout({"data": unsigned(8 * g.beat_bytes), "strb": unsigned(g.beat_bytes)})


#: ``mem_wr_resp`` carries no information; one reserved bit keeps the Verilog port well formed
#: (a zero-width Amaranth port becomes ``[-1:0]``, a two-bit port, in Verilog).
MEM_WRITE_RESPONSE = unsigned(1)


def act_vector(g: Geometry) -> data.ArrayLayout:
    """What one PE row receives per cycle: ``m_max`` activations (lane 0 alone when dense)."""
    return data.ArrayLayout(signed(g.data_bits), g.m_max)


def weight_entry(g: Geometry) -> data.StructLayout:
    """One stored weight: its value and, for a compressed row, its index in the group of M."""
    return data.StructLayout({"value": signed(g.data_bits), "index": unsigned(g.index_bits)})


def os_step(g: Geometry) -> data.StructLayout:
    """What one column of the output-stationary array receives per cycle: a weight (and index)
    of the current reduction step, and ``first``, the step that starts a new output tile (the
    PE hands its sum to the drain and restarts from the product)."""
    return data.StructLayout({"entry": weight_entry(g), "first": unsigned(1)})


def weight_row(g: Geometry) -> data.ArrayLayout:
    """A weight-buffer row: one entry per array column."""
    return data.ArrayLayout(weight_entry(g), g.cols)


def weight_load(g: Geometry) -> data.StructLayout:
    """A weight row on its way into PE row ``row`` of the array."""
    return data.StructLayout({"row": unsigned(max(1, ceil_log2(g.rows))), "entries": weight_row(g)})


class IssueSignature(wiring.Signature):
    """Controller → unit: instructions whose waits are met, and the unit's completion pulse.

    ``instr`` transfers in the cycle the instruction starts (the unit is ``ready`` exactly when
    idle); the unit raises ``done`` in the instruction's last cycle, so the completion count has
    its new value from the next cycle on, the end cycle of docs/isa.md's timing rule.
    """

    def __init__(self, unit: Unit, output_stationary: bool = False) -> None:
        super().__init__({"instr": Out(stream.Signature(unit_instr(unit, output_stationary))),
                          "done": In(1)})


class InputWriteSignature(wiring.Signature):
    """Write one activation row: ``pitch`` = log2 of the banks the row occupies."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "row": Out(max(1, ceil_log2(g.a_rows))),
            "pitch": Out(max(1, ceil_log2(ceil_log2(g.a_banks) + 1))),
            "data": Out(data.ArrayLayout(signed(g.data_bits), g.rows * g.a_banks)),
        })


class InputReadSignature(wiring.Signature):
    """Read one activation row; ``data`` (element ``e`` of the row at index ``e``) a cycle later.

    With ``parts > 1`` the read is of ``parts`` rows side by side (several kernel offsets per
    COMPUTE, docs/isa.md): ``row`` and ``more[j-1]`` are part ``j``'s row, each in its own bank
    group; part ``j`` fills the words ``j·2^p ..`` of ``data`` (``2^p`` banks per row of the
    slot), and a part whose ``zero`` bit is set reads as zeros (a padding pixel).
    """

    def __init__(self, g: Geometry) -> None:
        row = unsigned(max(1, ceil_log2(g.a_rows)))
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "row": Out(row),
            "parts": Out(range(g.a_banks + 1)),
            "more": Out(data.ArrayLayout(row, max(1, g.a_banks - 1))),
            "zero": Out(g.a_banks),
            "data": In(data.ArrayLayout(signed(g.data_bits), g.rows * g.a_banks)),
        })


class WeightRowWriteSignature(wiring.Signature):
    """Write a whole weight row (values and indices of every column)."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "row": Out(max(1, ceil_log2(g.b_rows))),
            "data": Out(weight_row(g)),
        })


class WeightRowReadSignature(wiring.Signature):
    """Read a weight row; ``data`` a cycle later, held while ``en`` is low."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "row": Out(max(1, ceil_log2(g.b_rows))),
            "data": In(weight_row(g)),
        })


class WeightBlockReadSignature(wiring.Signature):
    """Read rows ``block·b_banks … block·b_banks + b_banks − 1`` at once (bank order)."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "block": Out(max(1, ceil_log2(g.b_depth))),
            "data": In(data.ArrayLayout(weight_row(g), g.b_banks)),
        })


class WeightBankWriteSignature(wiring.Signature):
    """Per bank, write the columns ``mask`` selects at ``addr`` (the vector unit's results)."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "slot": Out(1),
            "mask": Out(data.ArrayLayout(unsigned(g.cols), g.b_banks)),
            "addr": Out(data.ArrayLayout(unsigned(max(1, ceil_log2(g.b_depth))), g.b_banks)),
            "data": Out(data.ArrayLayout(weight_row(g), g.b_banks)),
        })


class AccReadSignature(wiring.Signature):
    """Per column, read the accumulator at ``addr[j]`` of ``slot``; ``data[j]`` a cycle later."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "addr": Out(data.ArrayLayout(unsigned(max(1, ceil_log2(g.c_depth))), g.cols)),
            "data": In(data.ArrayLayout(signed(g.acc_bits), g.cols)),
        })


class AccWriteSignature(wiring.Signature):
    """Per column, write ``data[j]`` at ``addr[j]`` of ``slot`` where ``en[j]``."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "slot": Out(1),
            "en": Out(g.cols),
            "addr": Out(data.ArrayLayout(unsigned(max(1, ceil_log2(g.c_depth))), g.cols)),
            "data": Out(data.ArrayLayout(signed(g.acc_bits), g.cols)),
        })


class AccRowReadSignature(wiring.Signature):
    """Read accumulator row ``row`` of ``slot`` (every column); held while ``en`` is low."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "row": Out(max(1, ceil_log2(g.c_depth))),
            "data": In(data.ArrayLayout(signed(g.acc_bits), g.cols)),
        })


class MaskWriteSignature(wiring.Signature):
    """LOAD_MASK: memory beat ``word`` of a mask tile into mask slot ``slot``, as it arrived."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "word": Out(max(1, ceil_log2(g.mask_words))),
            "data": Out(8 * g.beat_bytes),
        })


class MaskReadSignature(wiring.Signature):
    """Read mask words ``word`` and ``word + 1`` of ``slot`` (``data``: the pair, ``word`` in
    the low half) a cycle later, so any mask row, which may straddle two beats, is in ``data``."""

    def __init__(self, g: Geometry) -> None:
        super().__init__({
            "en": Out(1),
            "slot": Out(1),
            "word": Out(max(1, ceil_log2(g.mask_words))),
            "data": In(2 * 8 * g.beat_bytes),
        })
