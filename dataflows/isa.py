"""The tile instruction set: the contract between the scheduler, the SimPy model and the RTL.

Three units execute instructions, each strictly in program order: the DMA engine (loads and
stores through the one DRAM port), the PE array (computes) and the vector unit (N:M compression).
Dependencies between units are *completion counts*: an instruction carries ``wait = (d, p, v)``
and may start only once the DMA, PE and vector units have completed at least ``d``, ``p`` and
``v`` instructions of this program. A unit starts an instruction in the very cycle its own
previous instruction ends and all three counts are met; it then stays busy for exactly
``dataflows.cost.latency(instr, hw)`` cycles. That rule is all the SimPy model and the RTL
controller share, and it is why their cycle counts can be compared exactly.

Buffers (input A, weight B, accumulator C) each have two slots (ping-pong halves) selected by the
``*_slot`` fields. See docs/isa.md for the bit-level encoding the RTL decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

from workloads.arith import ceil_div, index_bits
from workloads.spec import HardwareSpec

__all__ = [
    "MAX_SHIFT",
    "Op",
    "Unit",
    "SLOTS_PER_BUFFER",
    "UNIT_OF",
    "UNIT_INDEX",
    "MODEL_ONLY",
    "SPGEMM_ENGINE_OPS",
    "Instr",
    "SpGEMMInstr",
    "ConvAddress",
    "conv_rows",
    "conv_parts",
    "conv_t_rows",
    "os_conv_chunks",
    "conv_part_rows",
    "conv_parts_conflict_free",
    "FIELDS",
    "SIGNED_FIELDS",
    "WORD_BITS",
    "ROW_OFFSET_BITS",
    "encode",
    "decode",
    "row_bytes",
]


#: The largest ``shift`` a STORE_C word can carry (a 6-bit field); docs/isa.md defines every value.
MAX_SHIFT = 63

#: Every buffer is split into this many fixed slots (ping-pong halves), addressed by the
#: instructions' one-bit slot fields; a tile always fits one slot (docs/isa.md, "Slot capacity").
SLOTS_PER_BUFFER = 2


class Unit(IntEnum):
    DMA = 0
    PE = 1
    VEC = 2


class Op(IntEnum):
    LOAD_A = 1  # DRAM → input buffer slot: rows × cols activations
    LOAD_B = 2  # DRAM → weight buffer slot: dense rows, or compressed rows when nm_n > 0
    STORE_C = 3  # accumulator slot → DRAM: rows × cols accumulators, or requantized operands
    COMPUTE = 4  # PE array: acc[c] (+)= A[a][:m, :k·M/N] · B[b][:k, :cols]
    COMPRESS = 5  # vector unit: weight slot b, dense rows × cols → compressed N:M rows, in place
    STORE_B = 6  # weight slot → DRAM: compressed rows (pre-generated sparse weights)
    # Attention (docs/attention.md): the vector unit's online softmax over a score tile Sᵀ
    # (rows = keys, cols = queries) held in an accumulator slot, one running max and sum per
    # query column, plus the element masks of partial blocks.
    ROWMAX = 7  # vector: running max of acc[c_slot] columns; correction 2^(old - new) per column
    EXP = 8  # vector: rows k.. of acc[c_slot] → 2^(s - max) into weight slot b_slot; sums them
    RESCALE = 9  # vector: acc[slot] columns × the corrections of the last ROWMAX
    NORMALIZE = 10  # vector: acc[slot] columns ÷ their running sums
    LOAD_MASK = 11  # DRAM → mask slot: rows × cols element-mask bits (one contiguous burst)
    # Attention backward (docs/attention.md, "Backward"): executed by the SimPy model only; the
    # RTL controller does not decode them, and no verified program contains them.
    STATS = 12  # DMA: rows × cols per-query statistics (log-sum-exp L, D) ↔ vector registers
    PEXP = 13  # vector: rows of acc[c_slot] → P = 2^(s − L) into weight slot b_slot
    DSCORE = 14  # vector: dS = P ∘ (dP − D) (or, with accumulate, D = Σ dO ∘ O per query)
    STORE_ADD = 15  # DMA: DRAM rows += accumulator rows (read-modify-write, as an atomic add)
    # SpGEMM (docs/isa.md, "SpGEMM instructions"; docs/spgemm.md): chunks of rows through the
    # SpGEMM engine's two scratchpad slots. The engine ops take the PE unit's place in the
    # controller (the array idles while SpGEMM runs). Model-only so far: the SimPy model and
    # the fast engine execute them, no RTL does (docs/isa.md).
    SP_LOAD = 16  # DMA: a chunk's operands (``nbytes``) from DRAM into scratchpad slot ``slot``
    SP_STORE = 17  # DMA: a chunk's output (``nbytes``) to DRAM; ``spill_bytes`` read back
    SP_INTERSECT = 18  # engine: inner product, a resident row chunk × a streamed column block
    SP_MULTIPLY = 19  # engine: outer product, column k of A × row k of B → partial rows
    SP_MERGE = 20  # engine: multiply-and-merge rows (Gustavson), or merge partial rows (outer)
    SP_HASH = 21  # engine: multiply-and-hash rows into the hash accumulator, drain C rows


#: Ops the SimPy model executes but no RTL does (the attention backward's, docs/isa.md): the
#: RTL controller drops words carrying them, and no verified program contains them.
MODEL_ONLY = frozenset({Op.STATS, Op.PEXP, Op.DSCORE, Op.STORE_ADD, Op.SP_LOAD, Op.SP_STORE,
                        Op.SP_INTERSECT, Op.SP_MULTIPLY, Op.SP_MERGE, Op.SP_HASH})

#: The SpGEMM engine's ops (they run on the PE unit's queue, in the array's place).
SPGEMM_ENGINE_OPS = frozenset({Op.SP_INTERSECT, Op.SP_MULTIPLY, Op.SP_MERGE, Op.SP_HASH})

UNIT_OF = {
    Op.LOAD_A: Unit.DMA,
    Op.LOAD_B: Unit.DMA,
    Op.STORE_C: Unit.DMA,
    Op.STORE_B: Unit.DMA,
    Op.COMPUTE: Unit.PE,
    Op.COMPRESS: Unit.VEC,
    Op.ROWMAX: Unit.VEC,
    Op.EXP: Unit.VEC,
    Op.RESCALE: Unit.VEC,
    Op.NORMALIZE: Unit.VEC,
    Op.LOAD_MASK: Unit.DMA,
    Op.STATS: Unit.DMA,
    Op.PEXP: Unit.VEC,
    Op.DSCORE: Unit.VEC,
    Op.STORE_ADD: Unit.DMA,
    Op.SP_LOAD: Unit.DMA,
    Op.SP_STORE: Unit.DMA,
    **{op: Unit.PE for op in SPGEMM_ENGINE_OPS},
}

#: Each op's unit as a plain int: list indices and dict keys in the emitter's and the timing
#: loops, where a dict lookup beats ``int(UNIT_OF[op])``.
UNIT_INDEX = {op: int(unit) for op, unit in UNIT_OF.items()}


# Not frozen, for the reason Instr is not (below): the convolution writers build one per
# COMPUTE, and a frozen one of these 16 fields cost 6 us to build. Hashable, and treated as
# an immutable value all the same (the emitter shares equal ones).
@dataclass(slots=True, unsafe_hash=True)
class ConvAddress:
    """COMPUTE's convolution address mode: which input-slot row each streamed A row reads.

    The slot holds a *patch* of an NHWC feature map, one row per pixel (a chunk of channels),
    whole input lines from line ``lo`` of the first image on, images back to back (``in_h``
    lines of ``in_w`` pixels each). Streamed row ``i`` is output pixel ``(oh, ow)`` of image
    ``n`` (relative to the first), counted in output lines of ``out_w`` pixels from line ``oh0``;
    at kernel offset ``(dh, dw)`` (``kh − padding``, ``kw − padding``) it reads input pixel
    ``(ih, iw) = (oh·stride + dh, ow·stride + dw)``: slot row
    ``a_row + (n·in_h + ih − lo)·in_w + iw``, or a zero row where the pixel lies in the padding
    (docs/isa.md, "Convolution address mode"). Streamed row 0 is pixel ``ow0`` of its line.
    With ``b`` the mode addresses the weight rows a COMPUTE preloads instead (row ``r`` of
    ``k``, from slot row ``b_row``): a weight-gradient GEMM's stationary operand is the
    im2col matrix there.

    With ``group > 1`` (A rows only) one streamed row is ``group`` pixels side by side, the
    kernel offsets that follow ``(dh, dw)`` in row-major order over a kernel ``kw`` columns
    wide whose first offset sits in kernel column ``kw0`` (:func:`conv_parts`): a COMPUTE
    covers several kernel offsets of a feature map with fewer channels than its reduction
    tile (docs/isa.md, "Several kernel offsets per COMPUTE").

    With ``t`` (the transposing read, A rows, dense) the COMPUTE streams the *transpose* of
    the patch's im2col rows: the ``k`` weight rows are ``k`` consecutive output pixels from
    ``(oh0, ow0)``, and streamed row ``i`` is channel ``i mod rows`` (``rows`` = the array's
    PE rows) of block ``i div rows``; block ``j`` is kernel offset ``j mod kh·kw`` (row-major
    from ``(dh, dw)``, a kernel ``kh × kw``) of channel chunk ``j div kh·kw``, whose patch
    starts ``chunk_rows`` slot rows after the previous chunk's (:func:`conv_t_rows`;
    docs/isa.md, "The transposing read").
    """

    stride: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    oh0: int
    lo: int
    dh: int
    dw: int
    ow0: int = 0
    b: bool = False
    group: int = 1
    kw: int = 0
    kw0: int = 0
    t: bool = False
    kh: int = 0
    chunk_rows: int = 0
    kh0: int = 0


def conv_rows(conv: ConvAddress, a_row: int, m: int) -> list[int | None]:
    """The input-slot row each of ``m`` streamed rows reads under ``conv`` (None: a zero row,
    the pixel lies in the padding). The golden model and the RTL's address counters follow
    exactly this rule."""
    rows: list[int | None] = []
    for i in range(m):
        line, ow = divmod(conv.ow0 + i, conv.out_w)
        image, oh = divmod(conv.oh0 + line, conv.out_h)
        ih, iw = oh * conv.stride + conv.dh, ow * conv.stride + conv.dw
        inside = 0 <= ih < conv.in_h and 0 <= iw < conv.in_w
        rows.append(a_row + (image * conv.in_h + ih - conv.lo) * conv.in_w + iw if inside else None)
    return rows


def conv_t_rows(conv: ConvAddress, a_row: int, k: int, blocks: int) -> list[list[int | None]]:
    """The transposing read (``conv.t``): per block ``j < blocks``, the slot row each of the
    ``k`` pixels reads (None: padding). Block ``j`` is kernel offset ``o = j mod kh·kw`` —
    ``(dh + o div kw, dw + o mod kw)`` — of channel chunk ``j div kh·kw``, whose patch starts
    at ``a_row + chunk·chunk_rows``; its pixels are the rule of :func:`conv_rows` from
    ``(oh0, ow0)``. The golden model and the RTL's counters follow exactly this rule."""
    per = conv.kh * conv.kw
    out = []
    for j in range(blocks):
        chunk, o = divmod(j, per)
        block = replace(conv, dh=conv.dh + o // conv.kw, dw=conv.dw + o % conv.kw, t=False)
        out.append(conv_rows(block, a_row + chunk * conv.chunk_rows, k))
    return out


def os_conv_chunks(conv: ConvAddress, a_row: int, chunks: int) -> list[tuple[int, ConvAddress]]:
    """An output-stationary COMPUTE's reduction chunks through the address mode on A rows:
    per chunk ``c``, the first slot row of its patch and its own one-chunk address mode (what
    a weight-stationary COMPUTE of that chunk would carry). The chunks walk the kernel's
    offsets in row-major order over ``kh × kw``, ``group`` offsets per chunk (the last group
    of a channel chunk may hold fewer), from the word's first offset ``o0 = kh0·kw + kw0``
    (its ``dh, dw`` being that offset less the padding); after a channel chunk's last offsets
    the walk goes on at offset 0 of the next channel chunk, whose patch starts ``chunk_rows``
    slot rows further. Each chunk's rows start at the word's first pixel. The golden model
    and the RTL's counters follow exactly this rule."""
    g, per = max(1, conv.group), conv.kh * conv.kw
    groups = -(-per // g)  # chunks per channel chunk
    first = conv.kh0 * conv.kw + conv.kw0
    dh0, dw0 = conv.dh - conv.kh0, conv.dw - conv.kw0  # minus the padding
    out = []
    for c in range(chunks):
        patch, gi = divmod(first // g + c, groups)
        o = gi * g
        out.append((a_row + patch * conv.chunk_rows, replace(
            conv, dh=dh0 + o // conv.kw, dw=dw0 + o % conv.kw, kh0=0, kw0=o % conv.kw,
            group=min(g, per - o), chunk_rows=0)))
    return out


def conv_parts(conv: ConvAddress) -> list[tuple[int, int]]:
    """``(dh, dw)`` of each of the ``group`` kernel offsets one streamed row holds: the first is
    the word's, each next one column further right, wrapping to the next kernel row after
    column ``kw − 1`` (so ``dw`` goes back by ``kw − 1`` and ``dh`` up by one)."""
    parts, dh, col = [], conv.dh, conv.kw0
    for _ in range(max(1, conv.group)):
        parts.append((dh, conv.dw + col - conv.kw0))
        col += 1
        if col == conv.kw:
            col, dh = 0, dh + 1
    return parts


def conv_part_rows(conv: ConvAddress, a_row: int, m: int) -> list[list[int | None]]:
    """Per part (:func:`conv_parts`), the slot row each of ``m`` streamed rows reads there
    (None: the pixel lies in the padding)."""
    return [conv_rows(replace(conv, dh=dh, dw=dw, group=1), a_row, m)
            for dh, dw in conv_parts(conv)]


def conv_parts_conflict_free(conv: ConvAddress, bank_groups: int) -> bool:
    """Whether the parts of one streamed row lie in distinct bank groups of the input buffer.

    A row of ``2^p`` banks sits in bank group ``row mod bank_groups`` (``bank_groups = banks /
    2^p``), and each group reads one address per cycle. The parts' rows differ by constants,
    ``(dh_j − dh_0)·in_w + dw_j − dw_0``, the same for every streamed row (padding pixels
    included: their reads are made and discarded), so this is a property of the word."""
    first_dh, first_dw = conv_parts(conv)[0]
    residues = {((dh - first_dh) * conv.in_w + dw - first_dw) % bank_groups
                for dh, dw in conv_parts(conv)}
    return len(residues) == max(1, conv.group)


# Not frozen: a frozen dataclass sets each of its 18 fields through object.__setattr__, which
# doubled the scheduler's cost per instruction; instructions are still hashable and treated as
# immutable values (use dataclasses.replace).
@dataclass(slots=True, unsafe_hash=True)
class Instr:
    """One tile instruction (a value: never modified once built). Unused fields are zero.

    DMA instructions move ``rows`` rows of ``cols`` elements between DRAM (``addr``, rows
    ``stride`` bytes apart) and buffer slot ``slot``, from the slot row its buffer's row offset
    names (``a_row``, ``b_row`` or ``c_row``). ``COMPUTE`` streams ``m`` rows of A through the
    array whose first ``k`` PE rows hold B's rows; dense mode when ``nm_n == 0``. A LOAD_A with
    ``k > cols`` lays its rows out at the width of ``k`` operands (the width of the slot's other
    rows), so a narrower last reduction chunk shares a slot with full ones.
    """

    op: Op
    wait: tuple[int, int, int] = (0, 0, 0)
    slot: int = 0  # DMA and COMPRESS: the buffer slot; COMPUTE: the A slot
    b_slot: int = 0
    c_slot: int = 0
    accumulate: bool = False
    addr: int = 0
    stride: int = 0
    rows: int = 0
    cols: int = 0
    k: int = 0
    m: int = 0
    nm_n: int = 0
    nm_m: int = 0
    mask: bool = False  # ROWMAX/EXP: apply the element mask in mask slot ``slot``
    requant: bool = False  # STORE_C: write ``requantize(acc, shift)`` at operand width
    shift: int = 0  # STORE_C with ``requant``: arithmetic right shift before rounding
    # Row offsets within a slot (buffer-level tiles: one slot holds several array tiles).
    # COMPUTE reads A rows from ``a_row``, weight rows from ``b_row`` and accumulates into
    # accumulator rows from ``c_row``; LOAD_A writes from ``a_row``, LOAD_B/STORE_B use
    # ``b_row``, STORE_C reads from ``c_row``.
    a_row: int = 0
    b_row: int = 0
    c_row: int = 0
    # COMPUTE only: A rows through the convolution address mode (None: rows a_row.. in order).
    conv: ConvAddress | None = None
    # COMPUTE on the output-stationary array only (docs/isa.md, "Output-stationary COMPUTE"):
    # ``chunks`` reduction chunks (0 and 1: one), chunk ``c`` reading A rows from
    # ``a_row + c·a_chunk_rows`` and weight rows from ``b_row + c·b_chunk_rows``; the last
    # chunk has ``k_last`` PE steps (0: ``k``), the others ``k``.
    chunks: int = 0
    a_chunk_rows: int = 0
    b_chunk_rows: int = 0
    k_last: int = 0

    #: The SpGEMM fields of an :class:`SpGEMMInstr`, for its shape (``cost.shape_of``); None
    #: here. A class attribute, not three slots: the millions of GEMM instructions a program
    #: may hold stay smaller and as quick to build and to shape.
    spgemm_fields = None

    @property
    def unit(self) -> Unit:
        return UNIT_OF[self.op]

    @property
    def transposing(self) -> bool:
        """A COMPUTE with the transposing read (``conv.t``, A rows: the weight-side mode
        ``conv.b`` overrides it, in the golden model and the RTL alike): it fills a register
        block first."""
        return self.conv is not None and self.conv.t and not self.conv.b

    @property
    def chunk_steps(self) -> tuple[int, ...]:
        """A COMPUTE's PE steps per reduction chunk: ``k`` for each but the last, which has
        ``k_last`` (or ``k``)."""
        kc = max(1, self.chunks)
        return (self.k,) * (kc - 1) + (self.k_last or self.k,)


@dataclass(slots=True, unsafe_hash=True)
class SpGEMMInstr(Instr):
    """An SpGEMM instruction (ops ``SP_*``, docs/isa.md "SpGEMM instructions"): an
    :class:`Instr` with three more fields. SP_LOAD and SP_STORE move ``nbytes``; an SP_STORE
    also reads back ``spill_bytes`` of products the hash engine spilled. An engine op works
    ``cycles``: its chunk's cycles under the engine's timing rules (data dependent, so the
    SpGEMM writer computes them from the matrices)."""

    nbytes: int = 0
    spill_bytes: int = 0
    cycles: int = 0

    @property
    def spgemm_fields(self) -> tuple[int, int, int]:
        return self.nbytes, self.spill_bytes, self.cycles


def row_bytes(instr: Instr, hw: HardwareSpec) -> int:
    """Bytes one DRAM row of a DMA instruction occupies.

    A compressed weight row holds ``cols`` values followed by ``cols`` packed indices of
    ⌈log2 M⌉ bits (rounded up to whole bytes per row). A STORE_C row holds accumulators, or
    operands when it requantizes (``requant``: finished outputs leave at operand width).
    """
    if instr.op == Op.STORE_C:
        return instr.cols * (hw.data_bytes if instr.requant else hw.acc_bytes)
    if instr.op in (Op.STATS, Op.STORE_ADD):  # accumulator-width words
        return instr.cols * hw.acc_bytes
    if instr.op == Op.LOAD_MASK:
        return ceil_div(instr.cols, 8)
    if instr.op in (Op.LOAD_B, Op.STORE_B) and instr.nm_n:
        return instr.cols * hw.data_bytes + ceil_div(instr.cols * index_bits(instr.nm_m), 8)
    return instr.cols * hw.data_bytes


# --------------------------------------------------------------------------------------------
# Bit-level encoding (a 512-bit word; the RTL controller decodes exactly these fields)
# --------------------------------------------------------------------------------------------

WORD_BITS = 512

#: Width of the slot row offsets ``a_row``, ``b_row`` and ``c_row``.
ROW_OFFSET_BITS = 20

#: (name, width) from bit 0 upward.
FIELDS: tuple[tuple[str, int], ...] = (
    ("op", 4),
    ("slot", 1),
    ("b_slot", 1),
    ("c_slot", 1),
    ("accumulate", 1),
    ("nm_n", 5),
    ("nm_m", 5),
    ("wait_dma", 24),
    ("wait_pe", 24),
    ("wait_vec", 24),
    ("addr", 32),
    ("stride", 24),
    ("rows", 16),
    ("cols", 16),
    ("k", 16),
    ("m", 16),
    ("mask", 1),
    ("requant", 1),
    ("shift", 6),
    ("a_row", ROW_OFFSET_BITS),
    ("b_row", ROW_OFFSET_BITS),
    ("c_row", ROW_OFFSET_BITS),
    # COMPUTE's convolution address mode (ConvAddress; all 0 when ``conv`` is 0).
    ("conv", 1),
    ("conv_stride", 3),
    ("conv_in_h", 12),
    ("conv_in_w", 12),
    ("conv_out_h", 12),
    ("conv_out_w", 12),
    ("conv_oh0", 12),
    ("conv_lo", 12),
    ("conv_dh", 8),
    ("conv_dw", 8),
    ("conv_ow0", 12),
    ("conv_b", 1),
    # Several kernel offsets per COMPUTE (ConvAddress.group; 0 and 1 both mean one).
    ("conv_group", 4),
    ("conv_kw", 6),
    ("conv_kw0", 6),
    # The transposing read (ConvAddress.t, .kh, .chunk_rows; all 0 when ``conv_t`` is 0).
    ("conv_t", 1),
    ("conv_kh", 6),
    ("conv_chunk_rows", ROW_OFFSET_BITS),
    # The output-stationary COMPUTE's kernel-offset walk: the first offset's kernel row.
    ("conv_kh0", 6),
    # The output-stationary COMPUTE's reduction chunks (all 0 on the weight-stationary array).
    ("chunks", 12),
    ("a_chunk_rows", ROW_OFFSET_BITS),
    ("b_chunk_rows", ROW_OFFSET_BITS),
    ("k_last", 16),
)

#: Fields that hold two's complement values (the kernel offsets less the padding).
SIGNED_FIELDS = frozenset({"conv_dh", "conv_dw"})

_CONV_FIELDS = ("stride", "in_h", "in_w", "out_h", "out_w", "oh0", "lo", "dh", "dw", "ow0", "b",
                "group", "kw", "kw0", "t", "kh", "chunk_rows", "kh0")


def _values(instr: Instr) -> dict[str, int]:
    d, p, v = instr.wait
    return {
        "op": int(instr.op), "slot": instr.slot, "b_slot": instr.b_slot, "c_slot": instr.c_slot,
        "accumulate": int(instr.accumulate), "nm_n": instr.nm_n, "nm_m": instr.nm_m,
        "wait_dma": d, "wait_pe": p, "wait_vec": v, "addr": instr.addr, "stride": instr.stride,
        "rows": instr.rows, "cols": instr.cols, "k": instr.k, "m": instr.m,
        "mask": int(instr.mask), "requant": int(instr.requant), "shift": instr.shift,
        "a_row": instr.a_row, "b_row": instr.b_row, "c_row": instr.c_row,
        "chunks": instr.chunks, "a_chunk_rows": instr.a_chunk_rows,
        "b_chunk_rows": instr.b_chunk_rows, "k_last": instr.k_last,
        "conv": int(instr.conv is not None),
        **{f"conv_{name}": int(getattr(instr.conv, name)) if instr.conv else 0
           for name in _CONV_FIELDS},
        # One offset per COMPUTE encodes as 0, so words without the grouping read as before.
        "conv_group": instr.conv.group if instr.conv and instr.conv.group > 1 else 0,
    }


def encode(instr: Instr) -> int:
    """The instruction as a ``WORD_BITS``-bit integer; raises ValueError if a field overflows."""
    word, shift = 0, 0
    values = _values(instr)
    for name, width in FIELDS:
        value = values[name]
        if name in SIGNED_FIELDS and -(1 << (width - 1)) <= value < (1 << (width - 1)):
            value &= (1 << width) - 1
        if not 0 <= value < (1 << width):
            raise ValueError(f"field {name}={value} does not fit in {width} bits ({instr.op.name})")
        word |= value << shift
        shift += width
    return word


def decode(word: int) -> Instr:
    """Inverse of :func:`encode`."""
    values, shift = {}, 0
    for name, width in FIELDS:
        value = (word >> shift) & ((1 << width) - 1)
        if name in SIGNED_FIELDS and value >> (width - 1):
            value -= 1 << width
        values[name] = value
        shift += width
    conv = {name: values.pop(f"conv_{name}") for name in _CONV_FIELDS}
    conv["b"], conv["t"] = bool(conv["b"]), bool(conv["t"])
    conv["group"] = max(1, conv["group"])
    values["conv"] = ConvAddress(**conv) if values.pop("conv") else None
    wait = (values.pop("wait_dma"), values.pop("wait_pe"), values.pop("wait_vec"))
    flags = {name: bool(values.pop(name)) for name in ("accumulate", "mask", "requant")}
    return Instr(op=Op(values.pop("op")), wait=wait, **flags, **values)
