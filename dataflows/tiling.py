"""Tile sizes, loop orders and operand orientation for one GEMM on the array.

The stationary tile is fixed by the array: ``tk`` = PE rows (× M/N when the array skips pruned
weights, since each PE row then holds one kept weight of a group) and ``tn`` = PE columns. What
remains to choose is ``tm`` (activation rows streamed per COMPUTE), the loop order and, for dense
GEMMs, which operand is stationary (``swap`` computes Cᵀ = Bᵀ·Aᵀ). The default heuristic takes
the largest ``tm`` the buffers hold; the *offline tiling* pass searches these choices with the
analytic estimate below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dataflows.cost import GemmEstimate, compress_cycles, compute_cycles, dma_cycles
from dataflows.isa import SLOTS_PER_BUFFER
from workloads.arith import ceil_div, index_bits
from workloads.errors import MappingError
from workloads.lowering import GemmTask
from workloads.spec import HardwareSpec

__all__ = [
    "Tiling",
    "default_tiling",
    "search_tiling",
    "estimate",
    "max_tm",
    "input_row_bytes",
    "MAX_TILE_ROWS",
]

#: ``rows``/``m`` instruction fields are 16 bits wide.
MAX_TILE_ROWS = (1 << 16) - 1


@dataclass(frozen=True, slots=True)
class Tiling:
    """How one GEMM is cut into tiles.

    Attributes
    ----------
    swap
        Run the GEMM as Cᵀ = Bᵀ·Aᵀ (dense GEMMs only), so the larger of m and n streams.
    sparse
        The array skips pruned weights (N:M mode).
    compressed_in_dram
        Weights are loaded already compressed (pre-generated, or deployed compressed for
        inference); otherwise dense weights are loaded and compressed on chip before each use.
    """

    tm: int
    tk: int
    tn: int
    order: Literal["mnk", "nmk"] = "mnk"
    swap: bool = False
    sparse: bool = False
    compressed_in_dram: bool = False

    def dims(self, task: GemmTask) -> tuple[int, int, int]:
        """(m, k, n) as executed."""
        return (task.n, task.k, task.m) if self.swap else (task.m, task.k, task.n)


def _stationary_tile(task: GemmTask, hw: HardwareSpec, sparse: bool) -> tuple[int, int]:
    rows, cols = hw.array.rows, hw.array.cols
    tk = rows // task.nm[0] * task.nm[1] if sparse else rows
    return tk, cols


def input_row_bytes(width: int, hw: HardwareSpec) -> int:
    """Bytes of an input-buffer slot that one activation row of ``width`` operands occupies.

    The input buffer is banked ``array.rows`` operands wide and a row takes a power-of-two
    number of banks, so that a COMPUTE reads any row in one cycle (docs/isa.md, "Slot
    capacity"): a row of 12 operands on 8 PE rows takes 16 operand places, not 12.
    """
    rows = hw.array.rows
    banks = ceil_div(width, rows)
    return (1 << (banks - 1).bit_length()) * rows * hw.data_bytes


def max_tm(task: GemmTask, tk: int, tn: int, hw: HardwareSpec) -> int:
    """Largest ``tm`` whose A tile and accumulator tile fit one buffer slot each."""
    by_input = hw.buffers.input_bytes // SLOTS_PER_BUFFER // input_row_bytes(tk, hw)
    by_acc = hw.buffers.accumulator_bytes // SLOTS_PER_BUFFER // (tn * hw.acc_bytes)
    tm = min(by_input, by_acc, MAX_TILE_ROWS)
    if tm < 1:
        raise MappingError(
            f"{task.name}: an input row of {tk} elements or an accumulator row of {tn} does not "
            f"fit half of the buffers (input {hw.buffers.input_bytes} B, accumulator "
            f"{hw.buffers.accumulator_bytes} B); enlarge them"
        )
    return tm


def _check_weight_slot(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> None:
    dense_bytes = tiling.tk * tiling.tn * hw.data_bytes
    if hw.buffers.weight_bytes // SLOTS_PER_BUFFER < dense_bytes:
        raise MappingError(
            f"{task.name}: a weight tile of {tiling.tk}x{tiling.tn} elements ({dense_bytes} B) "
            f"does not fit a weight buffer slot ({hw.buffers.weight_bytes // SLOTS_PER_BUFFER} B); enlarge "
            f"buffers.weight_bytes"
        )


def _base(task: GemmTask, hw: HardwareSpec) -> tuple[bool, int, int]:
    """Whether the array runs the task sparse, and the stationary tile (tk, tn) that follows."""
    sparse = task.sparse_on(hw)
    tk, tn = _stationary_tile(task, hw, sparse)
    return sparse, tk, tn


def default_tiling(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool) -> Tiling:
    """The largest ``tm`` that fits, loop order m-n-k, no operand swap."""
    sparse, tk, tn = _base(task, hw)
    tm = min(task.m, max_tm(task, min(tk, task.k), tn, hw))
    tiling = Tiling(tm, tk, tn, "mnk", False, sparse, compressed_in_dram and sparse)
    _check_weight_slot(task, tiling, hw)
    return tiling


def _load_counts(nmt: int, nk: int, nn: int, order: str) -> tuple[int, int]:
    """(A loads, B loads) after eliding a load whose tile is already the one resident."""
    if order == "mnk":
        a = nmt * (nn * nk if nk > 1 else 1)
        b = nmt * nn * nk if nn * nk > 1 else 1
    else:
        b = nn * (nmt * nk if nk > 1 else 1)
        a = nn * nmt * nk if nmt * nk > 1 else 1
    return a, b


def estimate(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> GemmEstimate:
    """Analytic busy cycles per unit of one copy of ``task`` under ``tiling``."""
    m, k, n = tiling.dims(task)
    tm, tk, tn = min(tiling.tm, m), min(tiling.tk, k), min(tiling.tn, n)
    nmt, nk, nn = ceil_div(m, tm), ceil_div(k, tk), ceil_div(n, tn)
    a_loads, b_loads = _load_counts(nmt, nk, nn, tiling.order)
    db = hw.data_bytes
    dma = a_loads * dma_cycles(tm, tk * db, hw) + nmt * nn * dma_cycles(tm, tn * hw.acc_bytes, hw)
    vec = 0
    if tiling.sparse:
        nm_n, nm_m = task.nm
        kc = tk // nm_m * nm_n
        if tiling.compressed_in_dram:
            cols = hw.array.cols
            row = cols * db + ceil_div(cols * index_bits(nm_m), 8)
            dma += b_loads * dma_cycles(kc, row, hw)
        else:
            dma += b_loads * dma_cycles(tk, tn * db, hw)
            vec = b_loads * compress_cycles(tk, tn, nm_m, hw)
    else:
        dma += b_loads * dma_cycles(tk, tn * db, hw)
    pe = nn * nk * (nmt * (compute_cycles(0, hw)) + m)
    return GemmEstimate(dma=dma, pe=pe, vec=vec)


def _tm_candidates(m: int, limit: int) -> list[int]:
    top = min(m, limit)
    cands = {top, max(1, top // 2), max(1, top // 4)}
    cands.update(ceil_div(m, j) for j in (1, 2, 3, 4, 8) if ceil_div(m, j) <= limit)
    return sorted(cands, reverse=True)


def search_tiling(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool) -> Tiling:
    """Offline tiling: the (tm, loop order, orientation) with the lowest estimated cycles.

    Ties go to less DRAM time, then to the larger ``tm`` (fewer instructions).
    """
    sparse, tk, tn = _base(task, hw)
    best: tuple | None = None
    for swap in (False, True) if not sparse else (False,):
        m, k, _ = (task.n, task.k, task.m) if swap else (task.m, task.k, task.n)
        limit = max_tm(task, min(tk, k), tn, hw)
        for order in ("mnk", "nmk"):
            for tm in _tm_candidates(m, limit):
                tiling = Tiling(tm, tk, tn, order, swap, sparse, compressed_in_dram and sparse)
                est = estimate(task, tiling, hw)
                key = (est.cycles, est.dma, -tm)
                if best is None or key < best[0]:
                    best = (key, tiling)
    tiling = best[1]
    _check_weight_slot(task, tiling, hw)
    return tiling
