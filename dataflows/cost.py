"""Cycle and traffic formulas: small pure functions shared by the scheduler, the SimPy model and
the RTL (which is built to take exactly these many cycles; verification checks that it does).

All results are integer cycles, bytes or elements.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass
from operator import attrgetter

from dataflows.isa import SPGEMM_ENGINE_OPS, UNIT_INDEX, Instr, Op, Unit, row_bytes
from dataflows.softmax_format import SoftmaxFormat
from workloads.arith import ceil_div
from workloads.errors import SimulationError
from workloads.spec import HardwareSpec

__all__ = [
    "COMPUTE_PIPELINE_CYCLES",
    "dma_cycles",
    "transfer_cycles",
    "compute_cycles",
    "transposing_compute_cycles",
    "tile_compute_cycles",
    "os_compute_cycles",
    "compute_latency",
    "compress_cycles",
    "latency",
    "transfer_bytes",
    "GemmEstimate",
    "timeline",
    "queue_waits",
    "latencies",
    "shape_of",
    "shape_index",
    "shape_counts",
    "program_cycles",
    "SOFTMAX_MUL_CYCLES",
    "SOFTMAX_READ_CYCLES",
    "softmax_beats",
    "reciprocal_bits",
    "reciprocal_cycles",
    "rowmax_cycles",
    "exp_cycles",
    "scale_cycles",
    "normalize_cycles",
    "softmax_cycles",
    "mask_bytes",
]

#: Cycles of a COMPUTE beyond streaming and the systolic skew: one to read an activation row from
#: the input buffer, one to register it at the array edge, one to add a column's result into its
#: accumulator (docs/rtl.md, "PE-array unit").
COMPUTE_PIPELINE_CYCLES = 3


def dma_cycles(rows: int, bytes_per_row: int, hw: HardwareSpec) -> int:
    """Cycles of one DMA transfer: the DRAM latency once, then one beat per bus width of each row.

    Rows start on a beat boundary (a 2-D transfer issues one burst per row), so a row of
    ``bytes_per_row`` costs ⌈bytes_per_row / bandwidth⌉ beats.
    """
    beats = rows * ceil_div(bytes_per_row, hw.dram.bandwidth_bytes_per_cycle)
    return hw.dram.latency_cycles + beats


def compute_cycles(m_rows: int, hw: HardwareSpec) -> int:
    """Cycles of one weight-stationary COMPUTE on the full array (same for dense and N:M).

    Weights are preloaded one PE row per cycle just ahead of the first activation row (row ``r``
    is needed ``r`` cycles after row 0), so preloading hides under the skew. The ``m_rows``
    activation rows enter one per cycle; the last one needs ``rows + cols - 1`` cycles to cross
    the skewed array to the bottom-right PE's output; plus :data:`COMPUTE_PIPELINE_CYCLES`. N:M
    mode costs the same cycles per tile, but each tile covers M/N times more of the reduction
    dimension, which is where its speedup comes from.
    """
    r, c = hw.array.rows, hw.array.cols
    return m_rows + r + c - 2 + COMPUTE_PIPELINE_CYCLES


def transposing_compute_cycles(m_rows: int, hw: HardwareSpec) -> int:
    """Cycles of a COMPUTE with the transposing read (docs/isa.md, "The transposing read"):
    :func:`compute_cycles` plus one fill of the first ``rows × rows`` register block (``rows``
    patch rows, one per cycle) before its first column streams; every later block fills while
    the previous one streams (``m`` is a multiple of ``rows``), so nothing else is added. The
    fill does not overlap the previous COMPUTE's drain, so a COMPUTE's latency stays a
    function of its own fields."""
    return compute_cycles(m_rows, hw) + hw.array.rows


def tile_compute_cycles(m_rows: int, hw: HardwareSpec, transposing: bool) -> int:
    """A COMPUTE's cycles, with or without the transposing read: the one choice between
    :func:`compute_cycles` and :func:`transposing_compute_cycles` (instructions, schedules
    and estimates all make it here)."""
    return (transposing_compute_cycles if transposing else compute_cycles)(m_rows, hw)


def os_compute_cycles(m_rows: int, chunks: int, hw: HardwareSpec) -> int:
    """Cycles of one COMPUTE on the output-stationary array (docs/isa.md, "Output-stationary
    COMPUTE"): every block of ``rows`` output rows × one reduction chunk takes ``rows`` cycles
    (its A rows fill a register block while the previous block streams its columns), so
    ``⌈m/rows⌉·chunks`` blocks take that many ``rows``; one fill of the first block, the skew of
    the array (``rows + cols``), the drain of the last tile's ``rows`` sums down the columns and
    two pipeline cycles (the edge register, the accumulator add) come once per COMPUTE: a
    tile's drain overlaps the next tile's reduction."""
    r, c = hw.array.rows, hw.array.cols
    return ceil_div(m_rows, r) * max(1, chunks) * r + 3 * r + c + 2


def compute_latency(instr: Instr, hw: HardwareSpec) -> int:
    """A COMPUTE's cycles on the hardware's array: the one choice between the dataflows (and,
    weight-stationary, between the plain and the transposing read)."""
    if hw.array.output_stationary:
        return os_compute_cycles(instr.m, instr.chunks, hw)
    return tile_compute_cycles(instr.m, hw, instr.transposing)


def compress_cycles(dense_rows: int, cols: int, m: int, hw: HardwareSpec) -> int:
    """Cycles for the vector unit to compress ``dense_rows × cols`` weights into N:M form.

    The unit works through one group row (M dense rows) at a time: one weight-buffer read gives
    all M rows, and each of the ``lanes`` lanes selects the top-N of one column's group per
    cycle, so a group row takes ⌈cols / lanes⌉ cycles; a fixed pipeline follows (its first cycle
    is the buffer read).
    """
    return dense_rows // m * ceil_div(cols, hw.vector_unit.lanes) + hw.vector_unit.pipeline_cycles


# --------------------------------------------------------------------------------------------
# The vector unit's softmax (attention; docs/attention.md). ``rtl/softmax.py`` is built to these
# stage depths and its cocotb test checks :func:`softmax_cycles` exactly. Its number format is
# ``dataflows.softmax_format.SoftmaxFormat``.
# --------------------------------------------------------------------------------------------

#: Stages from an exponential to its scaled result: the product register, then the rounding and
#: saturation register.
SOFTMAX_MUL_CYCLES = 2

#: The accumulator SRAM read that precedes every vector pass over a tile held there.
SOFTMAX_READ_CYCLES = 1


def softmax_beats(rows: int, cols: int, hw: HardwareSpec) -> int:
    """Beats of one pass over a ``rows × cols`` tile: one row of up to ``softmax_width`` query
    columns per cycle (each lane owns one query column: its max, sum and reciprocal)."""
    return rows * ceil_div(cols, hw.vector_unit.softmax_width)


def reciprocal_bits(hw: HardwareSpec) -> int:
    """Quotient bits of ``⌊2^K / sum⌋`` (:attr:`SoftmaxFormat.recip_bits`, ``P + G + 1``)."""
    return SoftmaxFormat.of(hw).recip_bits


def reciprocal_cycles(hw: HardwareSpec) -> int:
    """The per-lane restoring divider produces one quotient bit per cycle."""
    return reciprocal_bits(hw)


def rowmax_cycles(rows: int, cols: int, hw: HardwareSpec) -> int:
    """ROWMAX: read, the max pass, then the correction ``2^(old − new)`` through the exp stage
    and the running sum times it through the multiplier."""
    return (SOFTMAX_READ_CYCLES + softmax_beats(rows, cols, hw)
            + hw.vector_unit.exp_latency_cycles + SOFTMAX_MUL_CYCLES)


def exp_cycles(rows: int, cols: int, hw: HardwareSpec) -> int:
    """EXP: read, one beat per score row through the exp stage, one cycle for the sum register
    (and the weight-buffer write of the same cycle)."""
    beats = softmax_beats(rows, cols, hw)
    return SOFTMAX_READ_CYCLES + beats + hw.vector_unit.exp_latency_cycles + 1


def scale_cycles(rows: int, cols: int, hw: HardwareSpec) -> int:
    """RESCALE: read an accumulator row per beat, multiply, round and write it back."""
    return SOFTMAX_READ_CYCLES + softmax_beats(rows, cols, hw) + SOFTMAX_MUL_CYCLES


def normalize_cycles(rows: int, cols: int, hw: HardwareSpec) -> int:
    """NORMALIZE: the reciprocals of the running sums, then a RESCALE-like pass with them."""
    return reciprocal_cycles(hw) + scale_cycles(rows, cols, hw)


def softmax_cycles(rows: int, cols: int, hw: HardwareSpec) -> int:
    """The stand-alone softmax unit (``rtl/softmax.py``) on a ``rows × cols`` score tile.

    Three passes over the tile, as the ISA's ROWMAX, EXP and normalizing pass read it from the
    accumulator: the max pass (one beat per row), the exp-and-sum pass (the exp stage, then the
    sum is final), the reciprocal, and the pass that recomputes each exponential and scales it
    by the reciprocal (exp stage, then :data:`SOFTMAX_MUL_CYCLES`). Counted from the cycle the
    first score is accepted to the cycle the last probability leaves, inclusive, with the input
    offered back to back and the output never stalled.
    """
    beats, x = softmax_beats(rows, cols, hw), hw.vector_unit.exp_latency_cycles
    return beats + (beats + x) + reciprocal_cycles(hw) + (beats + x + SOFTMAX_MUL_CYCLES)


def dscore_cycles(rows: int, cols: int, hw: HardwareSpec) -> int:
    """DSCORE (attention backward, model only): read, one beat per row of two tiles side by side,
    a subtract stage, then :data:`SOFTMAX_MUL_CYCLES` for the product, written (or, in its
    ``D`` form, added into the per-query register) in the last cycle."""
    return SOFTMAX_READ_CYCLES + softmax_beats(rows, cols, hw) + 1 + SOFTMAX_MUL_CYCLES


def stats_cycles(rows: int, cols: int, store: bool, hw: HardwareSpec) -> int:
    """STATS (model only): one burst of ``rows × cols`` accumulator words; a store first turns
    each column's running max and sum into ``L = max + log2(sum)``, one pass through a table
    as deep as the exp stage."""
    burst = dma_cycles(1, rows * cols * hw.acc_bytes, hw)
    return burst + (hw.vector_unit.exp_latency_cycles if store else 0)


def store_add_cycles(rows: int, cols: int, hw: HardwareSpec) -> int:
    """STORE_ADD (model only): read the DRAM rows, then write them back plus the accumulator
    rows: two transfers of ``rows`` accumulator rows, one after the other on the DRAM port."""
    return 2 * dma_cycles(rows, cols * hw.acc_bytes, hw)


def mask_bytes(rows: int, cols: int) -> int:
    """Bytes of a ``rows × cols`` element mask in DRAM: rows of ⌈cols/8⌉ bytes back to back."""
    return rows * ceil_div(cols, 8)


def transfer_cycles(nbytes: int, hw: HardwareSpec) -> int:
    """Cycles of one contiguous DRAM transfer of ``nbytes`` (the SpGEMM engine's): ``dma_cycles``
    of a single row. An empty transfer is not issued, so it costs 0 (``dma_cycles`` would
    charge the latency)."""
    if nbytes <= 0:
        return 0
    return dma_cycles(1, int(nbytes), hw)


def transfer_bytes(instr: Instr, hw: HardwareSpec) -> int:
    """Bytes a DMA instruction moves across the DRAM interface (0 for other units)."""
    if instr.op in (Op.SP_LOAD, Op.SP_STORE):
        return instr.nbytes + instr.spill_bytes
    if instr.op in (Op.LOAD_A, Op.LOAD_B, Op.STORE_C, Op.STORE_B, Op.LOAD_MASK, Op.STATS):
        return instr.rows * row_bytes(instr, hw)
    if instr.op == Op.STORE_ADD:  # read, then written back
        return 2 * instr.rows * row_bytes(instr, hw)
    return 0


def latency(instr: Instr, hw: HardwareSpec) -> int:
    """Busy cycles of one instruction on its unit. The RTL must take exactly this long."""
    op = instr.op
    if op == Op.COMPUTE:
        return compute_latency(instr, hw)
    if op in SPGEMM_ENGINE_OPS:  # data dependent: the writer computed them (docs/spgemm.md)
        return instr.cycles
    if op in (Op.SP_LOAD, Op.SP_STORE):
        return transfer_cycles(instr.nbytes + instr.spill_bytes, hw)
    if op == Op.COMPRESS:
        return compress_cycles(instr.rows, instr.cols, instr.nm_m, hw)
    if op in _VECTOR_SOFTMAX:
        return _VECTOR_SOFTMAX[op](instr.rows, instr.cols, hw)
    if op == Op.LOAD_MASK:  # the mask tile is contiguous: one burst, not one per row
        return dma_cycles(1, mask_bytes(instr.rows, instr.cols), hw)
    if op == Op.STATS:  # ``accumulate`` marks a store (registers → DRAM)
        return stats_cycles(instr.rows, instr.cols, instr.accumulate, hw)
    if op == Op.STORE_ADD:
        return store_add_cycles(instr.rows, instr.cols, hw)
    return dma_cycles(instr.rows, row_bytes(instr, hw), hw)


_VECTOR_SOFTMAX = {
    Op.ROWMAX: rowmax_cycles,
    Op.EXP: exp_cycles,
    Op.RESCALE: scale_cycles,
    Op.NORMALIZE: normalize_cycles,
    Op.PEXP: exp_cycles,  # the EXP datapath, with L in place of the running max
    Op.DSCORE: dscore_cycles,
}


@dataclass(slots=True)  # not frozen: one per candidate tiling (see tiling.Tiling)
class GemmEstimate:
    """Analytic per-unit busy cycles of one GEMM mapping (used by the offline tiling search)."""

    dma: int
    pe: int
    vec: int
    read_bytes: int = 0  # DRAM bytes its loads read
    exposed: int = 0  # cycles no overlap hides: the first loads and the last stores

    @property
    def cycles(self) -> int:
        # Double buffering overlaps the units; the busiest one bounds the GEMM.
        return max(self.dma, self.pe, self.vec) + self.exposed


#: ``shape_of(instr)``: the fields an instruction's :func:`latency` and its statistics
#: (``archsim.accounting``) depend on, as a tuple. Instructions of one shape cost the same, so
#: each is computed once per shape. (An ``attrgetter``: the timing engines map it over
#: hundreds of thousands of instructions.)
shape_of = attrgetter("op", "rows", "cols", "k", "m", "nm_n", "nm_m", "accumulate", "requant",
                      "transposing", "chunks", "k_last", "spgemm_fields")


def shape_index(program) -> tuple[array, list[Instr]]:
    """Each instruction's shape (:data:`shape_of`) as an index into a list of one instruction
    per distinct shape. Shapes do not depend on the hardware, so a program remembers its
    index (``Program.derived``) for every design point that times it, and extends it when it
    grew (a build resumed under another bound)."""
    known = program.derived.get("shapes")
    if known is not None and known[0] == len(program.instrs):
        return known[1], known[2]
    first, ids, examples, index = known or (0, array("B"), [], {})
    new: list[int] = []  # the shapes from ``first`` on

    def read(lo: int, hi: int) -> None:
        instrs = program.instrs[lo:hi]
        for instr, shape in zip(instrs, map(shape_of, instrs)):
            i = index.get(shape)
            if i is None:
                i = index[shape] = len(examples)
                examples.append(instr)
            new.append(i)

    done = first
    for start, size, times in program.copies:  # a run's copies have its period's shapes
        if start < first:
            continue  # (a program resumed part way never holds copies: :class:`_Build`)
        read(done, start + size)
        new.extend(new[start - first:start + size - first] * times)
        done = start + size * (times + 1)
    read(done, len(program.instrs))
    # Machine integers, one or two bytes an instruction (a list holds eight): a VGG-16
    # iteration holds millions of instructions.
    code = "B" if len(examples) <= 1 << 8 else "H" if len(examples) <= 1 << 16 else "l"
    if code != ids.typecode:
        ids = array(code, ids)
    ids.extend(new)
    program.derived["shapes"] = (len(program.instrs), ids, examples, index)
    return ids, examples


def shape_counts(program) -> dict[tuple[int, int], int]:
    """How many instructions of each (tag, shape) a program holds (shapes: indices into
    :func:`shape_index`'s examples): what the statistics charge and the scheduler's traffic
    figures add up, once per shape. Remembered like the shapes (``Program.derived``): a sweep
    accounts a program at every design point that runs it."""
    known = program.derived.get("shape_counts")
    if known is None or known[0] != len(program.instrs):
        ids, _ = shape_index(program)
        known = program.derived["shape_counts"] = (len(program.instrs),
                                                   Counter(zip(program.tags, ids)))
    return known[1]


def latencies(program, hw: HardwareSpec) -> list[int]:
    """:func:`latency` of every instruction of ``program``, computed once per distinct shape."""
    ids, examples = shape_index(program)
    known = [latency(instr, hw) for instr in examples]
    return [known[i] for i in ids]


#: For each unit, the two other units (whose completion counts its waits name).
OTHER_UNITS = ((1, 2), (0, 2), (0, 1))


def queue_waits(program) -> list[tuple[list[int], list[int]]]:
    """For each unit, in its queue's order, what each of its instructions waits for on the two
    other units (:data:`OTHER_UNITS`): the timing loop reads them without reaching into the
    instructions. Not remembered: a VGG-16 iteration's would hold 27 MB at its peak, and
    laying them out costs little beside the loop."""
    instrs, queues = program.instrs, program.per_unit()
    waits = []
    for unit in Unit:
        a, b = OTHER_UNITS[unit]
        pairs = [instrs[i].wait for i in queues[unit]]
        waits.append(([w[a] for w in pairs], [w[b] for w in pairs]))
    return waits


def timeline(program, cycles: list[int]) -> tuple[tuple[list[int], ...], tuple[list[int], ...]]:
    """Evaluate the timing rule of docs/isa.md without simulating: for each unit, in its
    queue's order, when each of its instructions starts (its unit is free and every other unit
    has completed ``wait[u]`` instructions) and when it ends; ``cycles[i]`` is instruction
    ``i``'s latency. (An instruction is ready when its unit's previous one ends.)

    A program whose waits all name earlier instructions — every program the scheduler builds:
    its emitter derives waits from the instructions already emitted — is timed in one pass in
    program order (:func:`_in_program_order`). Otherwise each unit is advanced as far as its
    waits allow, round after round, so waits that point forward are handled too. Tight
    loops: the scheduler times every candidate program, and the fast engine every segment.

    Raises
    ------
    SimulationError
        If the program deadlocks (a wait is never met), with the message the SimPy model gives.
    """
    in_order = _in_program_order(program, cycles)
    if in_order is not None:
        return in_order
    queues, waits = program.per_unit(), queue_waits(program)
    busy = [list(map(cycles.__getitem__, queues[u])) for u in Unit]  # in queue order
    starts: tuple[list[int], ...] = ([], [], [])
    ends: tuple[list[int], ...] = ([], [], [])
    free = [0, 0, 0]
    progress = True
    while progress:
        progress = False
        for unit in (0, 1, 2):
            begun, done, t, latency_of = starts[unit], ends[unit], free[unit], busy[unit]
            need_a, need_b = waits[unit]
            a, b = OTHER_UNITS[unit]
            ends_a, ends_b = ends[a], ends[b]
            p = first = len(done)
            n = len(latency_of)
            while p < n:
                s = t
                need = need_a[p]
                if need:
                    if need > len(ends_a):
                        break
                    if ends_a[need - 1] > s:
                        s = ends_a[need - 1]
                need = need_b[p]
                if need:
                    if need > len(ends_b):
                        break
                    if ends_b[need - 1] > s:
                        s = ends_b[need - 1]
                begun.append(s)
                t = s + latency_of[p]
                done.append(t)
                p += 1
            free[unit] = t
            progress = progress or p > first
    _check_drained([queues[u] for u in Unit], ends)
    return starts, ends


def _in_program_order(program, cycles: list[int]
                      ) -> tuple[tuple[list[int], ...], tuple[list[int], ...]] | None:
    """:func:`timeline` in one pass over the instructions in program order, each starting when
    its unit's previous one ends and its waits are met; None at the first wait on an
    instruction later in program order (not timed yet), which the rounds handle. About a
    quarter faster than the rounds: no per-unit wait lists to lay out, no round to restart."""
    starts: tuple[list[int], ...] = ([], [], [])
    ends: tuple[list[int], ...] = ([], [], [])
    unit_of, others = UNIT_INDEX, OTHER_UNITS
    try:
        for instr, latency_of in zip(program.instrs, cycles):
            unit = unit_of[instr.op]
            done = ends[unit]
            s = done[-1] if done else 0
            wait = instr.wait
            a, b = others[unit]  # a wait on its own unit is always met (program order)
            need_a, need_b, ends_a, ends_b = wait[a], wait[b], ends[a], ends[b]
            if need_a and ends_a[need_a - 1] > s:
                s = ends_a[need_a - 1]
            if need_b and ends_b[need_b - 1] > s:
                s = ends_b[need_b - 1]
            starts[unit].append(s)
            done.append(s + latency_of)
    except IndexError:  # a wait on an instruction later in program order, not timed yet
        return None
    return starts, ends


def _check_drained(queues: list[list[int]], ends: tuple[list[int], ...]) -> None:
    for unit in Unit:
        if len(ends[unit]) < len(queues[unit]):
            left = len(queues[unit]) - len(ends[unit])
            counts = [len(e) for e in ends]
            raise SimulationError(
                f"program deadlocked: {unit.name} waits with {left} instructions left; completed "
                f"counts dma={counts[0]} pe={counts[1]} vec={counts[2]}"
            )


def program_cycles(program, hw: HardwareSpec) -> int:
    """Cycles of a whole program under the timing rule of docs/isa.md, without simulating
    (:func:`timeline`). The scheduler uses this exact figure to make decisions (``archsim``
    cannot be imported from ``dataflows``); tests check it equals the SimPy model's count.
    """
    _, ends = timeline(program, latencies(program, hw))
    return max((e[-1] for e in ends if e), default=0)  # a unit's ends never decrease
