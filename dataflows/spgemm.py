"""SpGEMM (C = A·B) on the SpGEMM engine: the mapping of each dataflow and its cost formulas.

Four dataflows share one engine (``HardwareSpec.spgemm``) and the DRAM channel (``hw.dram``):

``inner``
    (i, j, k): each output C[i, j] intersects row i of A with column j of B. A row chunk stays
    in the scratchpad while all of B (CSC) streams past it in column blocks, so B is fetched
    once per row chunk. Every pair of a non-empty row and a non-empty column is intersected.
``outer``
    (k, i, j), OuterSPACE: a multiply phase forms the outer product of column k of A and row k
    of B and writes it to DRAM as partial rows; a merge phase reads each row's partial rows
    back and merges them.
``gustavson``
    (i, k, j), row-wise as in MatRaptor / Gamma: C[i, :] = Σ_k a_ik·B[k, :]; the scaled B rows
    of one A row are merged by a radix-``merger_radix`` merge tree (several passes for long
    rows; intermediates spill to DRAM when they do not fit the scratchpad's merge half).
``hash``
    row-wise with a SMASH-like hash accumulator: partial products are added into a banked
    hash table as they are produced, and C rows are drained from it. This is exactly the RTL
    engine of ``rtl/spgemm.py`` (docs/spgemm.md has its cycle rules); verification demands
    equal cycle counts.

Everything here is pure and vectorized (numpy); the SimPy model (``archsim/spgemm.py``) runs
the chunk tables these functions return. All results are integer cycles, bytes or elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from dataflows.cost import dma_cycles, transfer_cycles
from workloads.arith import ceil_div
from workloads.errors import MappingError
from workloads.spec import HardwareSpec

__all__ = [
    "HASH_MULTIPLIER",
    "RTL_DATAFLOWS",
    "SpGEMMProblem",
    "ChunkTable",
    "HashTrace",
    "element_bytes",
    "partial_bytes",
    "transfer_cycles",
    "slot_capacity_bytes",
    "merge_half_bytes",
    "b_row_beats",
    "hash_bucket",
    "spill_readback_cycles",
    "merge_tree_depth",
    "merge_level_sizes",
    "greedy_chunks",
    "expand_b_rows",
    "map_inner",
    "map_outer",
    "map_gustavson",
    "map_hash",
    "hash_row_trace",
]

#: Dataflows whose engine exists in RTL (``rtl/spgemm.py``, the hash engine, verified cycle-exact
#: against this model); the others are model-only (docs/spgemm.md, "Limits").
RTL_DATAFLOWS = frozenset({"hash"})

#: Fibonacci hashing constant (2^32 / golden ratio): spreads strided column patterns (grid
#: stencils whose strides are powers of two) over the buckets, which low bits would not.
HASH_MULTIPLIER = 0x9E3779B1

# Products per vectorized block of the hash model: bounds memory (~100 B per product); 2 M
# products keep the arrays near the caches (measured: faster than 1 M, 4 M or 8 M).
_BLOCK_PRODUCTS = 1 << 21
# Entries of the hash model's dense (row, column) and (row, bucket) tables (int32: 32 MiB each);
# a block has at most this many entries' worth of rows.
_DENSE_ENTRIES = 1 << 22


# --------------------------------------------------------------------------------------------
# Sizes and transfers
# --------------------------------------------------------------------------------------------


def element_bytes(hw: HardwareSpec) -> int:
    """Bytes of one stored A or B nonzero: a column index and an operand."""
    return hw.spgemm.index_bytes + hw.data_bytes


def partial_bytes(hw: HardwareSpec) -> int:
    """Bytes of one partial product or C nonzero: a column index and an accumulator value."""
    return hw.spgemm.index_bytes + hw.acc_bytes



def slot_capacity_bytes(hw: HardwareSpec) -> int:
    """Bytes of one fetch slot: a quarter of the scratchpad (two slots double-buffer fetches)."""
    return hw.spgemm.scratchpad_bytes // 4


def merge_half_bytes(hw: HardwareSpec) -> int:
    """Scratchpad bytes for merge intermediates (and the inner product's resident A chunk)."""
    return hw.spgemm.scratchpad_bytes // 2


def b_row_beats(b_nnz: np.ndarray, hw: HardwareSpec) -> np.ndarray:
    """Stream beats of B rows: ``multipliers`` elements per beat, one beat for an empty row."""
    p = hw.spgemm.multipliers
    return np.maximum(1, ceil_div(np.asarray(b_nnz, dtype=np.int64), p))


def hash_bucket(cols: np.ndarray, hw: HardwareSpec) -> np.ndarray:
    """Home bucket of each column index: the top bits of the low 32 bits of ``col·HASH_MULTIPLIER``.

    The bank is ``bucket % hash_banks``; the bucket's entries within its bank start at
    ``(bucket // hash_banks) · hash_ways``.
    """
    bits = int(hw.spgemm.hash_buckets).bit_length() - 1
    # uint32 arithmetic wraps modulo 2^32, which is exactly the low 32 bits of the product.
    h = np.asarray(cols).astype(np.uint32)
    if not bits:
        return np.zeros(h.shape, np.int64)
    h *= np.uint32(HASH_MULTIPLIER)
    h >>= np.uint32(32 - bits)
    return h.astype(np.int64)


def spill_readback_cycles(spilled: np.ndarray | int, hw: HardwareSpec) -> np.ndarray:
    """Cycles from the end of a hash pass until its spilled partial products are back.

    One DRAM transfer of the pass's spill region, ``spilled · partial_bytes`` bytes
    (:func:`transfer_cycles`, element-wise). Only passes that spilled pay it.
    """
    s = np.asarray(spilled, dtype=np.int64)
    return np.where(s > 0, dma_cycles(1, s * partial_bytes(hw), hw), 0)


def merge_tree_depth(hw: HardwareSpec) -> int:
    """Pipeline depth of the radix-R merge tree: one comparator level per halving."""
    return max(1, (hw.spgemm.merger_radix - 1).bit_length())


def merge_level_sizes(
    lists: np.ndarray, elements: np.ndarray, nnz_out: np.ndarray, radix: int
) -> list[np.ndarray]:
    """Input elements of each merge pass, per row (rows with fewer passes get 0).

    Pass 1 reads all ``elements`` (partial products) in ``lists`` sorted lists; each pass
    merges groups of ``radix`` lists, so ``ceil(log_radix(lists))`` passes finish a row (one
    pass for a single list). A pass's output is bounded by both its input and, per output list,
    the row's ``nnz_out``: the model uses that upper bound (``min(input, lists_left·nnz_out)``)
    because the exact sizes would need every intermediate list materialized.
    """
    lists = np.asarray(lists, dtype=np.int64)
    current = np.asarray(elements, dtype=np.int64).copy()
    left = lists.copy()
    sizes = []
    active = left > 0
    while np.any(active):
        sizes.append(np.where(active, current, 0))
        done = active & (left <= radix)
        left = np.where(active, ceil_div(left, radix), 0)
        current = np.where(active & ~done, np.minimum(current, left * nnz_out), 0)
        active = active & ~done
    return sizes


def greedy_chunks(sizes: np.ndarray, capacity: int) -> np.ndarray:
    """Boundaries of consecutive chunks whose ``sizes`` add up to at most ``capacity``.

    An item larger than ``capacity`` forms a chunk by itself (it streams through the slot).
    Returns ``[0, b1, ..., n]``.
    """
    n = len(sizes)
    cum = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
    bounds = [0]
    start = 0
    while start < n:
        end = int(np.searchsorted(cum, cum[start] + capacity, side="right")) - 1
        start = max(end, start + 1)
        bounds.append(start)
    return np.asarray(bounds, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The problem: operands and the per-row quantities every dataflow needs
# --------------------------------------------------------------------------------------------


class SpGEMMProblem:
    """A·B with the derived per-row and per-nonzero quantities, computed once and shared.

    Parameters
    ----------
    a, b : scipy.sparse matrix
        Integer operands; copied to canonical CSR (sorted indices, no duplicates or zeros).
    hw : HardwareSpec
        The engine's widths must hold the operands: values fit ``data_bits`` and indices and
        CSR offsets fit ``spgemm.index_bits``.

    Raises
    ------
    MappingError
        If the shapes do not chain or a value or index does not fit the engine's widths.
    """

    def __init__(self, a: sp.spmatrix, b: sp.spmatrix, hw: HardwareSpec) -> None:
        self.a = _canonical(a)
        self.b = self.a if b is a else _canonical(b)
        self.hw = hw
        if self.a.shape[1] != self.b.shape[0]:
            raise MappingError(
                f"C = A·B needs A.shape[1] == B.shape[0], got {self.a.shape} and {self.b.shape}"
            )
        limit = 1 << hw.spgemm.index_bits
        largest = max(*self.a.shape, *self.b.shape, self.a.nnz, self.b.nnz)
        if largest >= limit:
            raise MappingError(
                f"an index or CSR offset of {largest} does not fit spgemm.index_bits="
                f"{hw.spgemm.index_bits}; raise hardware.spgemm.index_bits"
            )
        lo, hi = -(1 << (hw.data_bits - 1)), (1 << (hw.data_bits - 1)) - 1
        for name, m in (("A", self.a), ("B", self.b)):
            if m.nnz and (m.data.min() < lo or m.data.max() > hi):
                raise MappingError(
                    f"values of {name} span [{m.data.min()}, {m.data.max()}], outside the "
                    f"{hw.data_bits}-bit operands [{lo}, {hi}] of the engine; raise data_bits"
                )

    @classmethod
    def unchecked(cls, a: sp.csr_matrix, b: sp.csr_matrix, hw: HardwareSpec) -> SpGEMMProblem:
        """A sub-problem of already validated canonical operands (a row chunk, a column block)."""
        problem = cls.__new__(cls)
        problem.a, problem.b, problem.hw = a, b, hw
        return problem

    @property
    def n_rows(self) -> int:
        return self.a.shape[0]

    @property
    def n_cols(self) -> int:
        return self.b.shape[1]

    @cached_property
    def a_row_nnz(self) -> np.ndarray:
        return np.diff(self.a.indptr).astype(np.int64)

    @cached_property
    def b_row_nnz(self) -> np.ndarray:
        return np.diff(self.b.indptr).astype(np.int64)

    @cached_property
    def b_len_per_a(self) -> np.ndarray:
        """nnz of the B row each A nonzero selects (its partial products)."""
        return self.b_row_nnz[self.a.indices]

    @cached_property
    def row_products(self) -> np.ndarray:
        """Partial products (multiplications) of each row of C."""
        return _segment_sum(self.b_len_per_a, self.a.indptr)

    @cached_property
    def multiplies(self) -> int:
        return int(self.row_products.sum())

    @cached_property
    def row_nnz_c(self) -> np.ndarray:
        """Structural nonzeros of each row of C, from pattern products in row blocks."""
        pattern_b = _pattern(self.b)
        out = np.zeros(self.n_rows, dtype=np.int64)
        bounds = _blocks_by_work(self.row_products, 1 << 24)
        for r0, r1 in zip(bounds[:-1], bounds[1:]):
            block = _pattern(self.a[r0:r1]) @ pattern_b
            out[r0:r1] = np.diff(block.indptr)
        return out

    @cached_property
    def a_row_bytes(self) -> np.ndarray:
        """DRAM bytes of each CSR row of A: its row pointer and its elements."""
        return self.hw.spgemm.index_bytes + self.a_row_nnz * element_bytes(self.hw)

    @cached_property
    def b_stream_row_bytes(self) -> np.ndarray:
        """Bytes of the B rows streamed for each row of A (row-wise dataflows, no B reuse).

        Each A nonzero fetches its B row: two row pointers and the row's elements.
        """
        per_a = 2 * self.hw.spgemm.index_bytes + self.b_len_per_a * element_bytes(self.hw)
        return _segment_sum(per_a, self.a.indptr)

    @cached_property
    def c_row_bytes(self) -> np.ndarray:
        """Bytes of each CSR row of C written back: its row pointer and its elements."""
        return self.hw.spgemm.index_bytes + self.row_nnz_c * partial_bytes(self.hw)

    def product_stream(self, r0: int, r1: int) -> _Products:
        """The partial products of rows ``r0..r1-1`` in engine order (row, A nonzero, B element)."""
        a = self.a
        e0, e1 = int(a.indptr[r0]), int(a.indptr[r1])
        elem, offset, bidx = expand_b_rows(self.b, a.indices[e0:e1])
        row_products = _segment_sum(self.b_len_per_a[e0:e1], a.indptr[r0 : r1 + 1] - e0)
        return _Products(
            row=np.repeat(np.arange(r1 - r0, dtype=np.int64), row_products),
            col=self.b.indices[bidx].astype(np.int64), elem=elem, offset=offset, bidx=bidx,
            first_a=e0,
        )


def expand_b_rows(b: sp.csr_matrix, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each selected row ``ks[e]`` of B, its elements: (selector e, offset in row, index).

    The elements come out in selector order, each row in its stored order.
    """
    ks = np.asarray(ks, dtype=np.int64)
    starts = b.indptr[ks].astype(np.int64)
    blen = b.indptr[ks + 1].astype(np.int64) - starts
    elem = np.repeat(np.arange(len(ks), dtype=np.int64), blen)
    first = np.cumsum(blen) - blen
    offset = np.arange(int(first[-1] + blen[-1]) if len(ks) else 0, dtype=np.int64)
    offset -= np.repeat(first, blen)
    return elem, offset, np.repeat(starts, blen) + offset


@dataclass
class _Products:
    """Parallel arrays, one entry per partial product, in engine order."""

    row: np.ndarray  # row of C, relative to the block's first row
    col: np.ndarray  # column of C
    elem: np.ndarray  # A nonzero, relative to the block's first A nonzero
    offset: np.ndarray  # position within the selected B row
    bidx: np.ndarray  # index into B.data
    first_a: int  # index into A.data of the block's first A nonzero

    @property
    def aidx(self) -> np.ndarray:
        """Index into A.data of each product's A nonzero."""
        return self.elem + self.first_a

    def values(self, problem: SpGEMMProblem) -> np.ndarray:
        return problem.a.data[self.aidx] * problem.b.data[self.bidx]


# --------------------------------------------------------------------------------------------
# Chunk tables: what the SimPy model executes
# --------------------------------------------------------------------------------------------


@dataclass
class ChunkTable:
    """One phase of a dataflow as a sequence of chunks through fetch → engine → write-back.

    Per chunk ``c``: the DMA fetches ``fetch_bytes[kind][c]`` into a free slot, the engine
    works ``engine_cycles[c]`` once the fetch is done and the previous chunk is finished, then
    the DMA writes ``write_bytes[kind][c]`` back. ``kind`` is one of ``a``, ``b``, ``c``,
    ``partial``; ``readback_bytes[c]`` (hash spills) are read back within the write-back
    transfer. ``units`` holds busy cycles of the engine's units (multipliers, merger, hash,
    intersect) and ``counters`` other event counts (collisions, spills, ...), phase totals.
    """

    name: str
    engine_cycles: np.ndarray
    fetch_bytes: dict[str, np.ndarray]
    write_bytes: dict[str, np.ndarray]
    units: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    row_bounds: np.ndarray | None = None  # row-chunked phases: rows of each chunk
    readback_bytes: np.ndarray | None = None  # partial bytes read back in the write-back transfer

    @property
    def n_chunks(self) -> int:
        return len(self.engine_cycles)

    def fetch_total(self) -> np.ndarray:
        return sum(self.fetch_bytes.values(), np.zeros(self.n_chunks, dtype=np.int64))

    def write_total(self) -> np.ndarray:
        return sum(self.write_bytes.values(), np.zeros(self.n_chunks, dtype=np.int64))


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Inner product
# --------------------------------------------------------------------------------------------


def map_inner(problem: SpGEMMProblem) -> list[ChunkTable]:
    """Inner product: row chunks of A stay resident; B (CSC) streams past in column blocks.

    A row chunk holds at most :func:`merge_half_bytes` of A; a B block at most
    :func:`slot_capacity_bytes`. Chunk ``(r, q)`` fetches B block ``q`` (and A chunk ``r``
    when ``q == 0``); its engine time is ``1 + ceil(steps / multipliers)`` where
    ``steps = Σ_(i, j) (|A_i| + |B_j|)`` over non-empty rows i of the chunk and non-empty
    columns j of the block: a two-pointer merge intersection per pair, ``multipliers`` pairs in
    parallel. C rows of a row chunk are written after its last block.
    """
    hw, a = problem.hw, problem.a
    p, idx_b = hw.spgemm.multipliers, hw.spgemm.index_bytes
    a_bytes = problem.a_row_bytes
    col_nnz = np.bincount(problem.b.indices, minlength=problem.n_cols).astype(np.int64)
    b_col_bytes = idx_b + col_nnz * element_bytes(hw)
    rb = greedy_chunks(a_bytes, merge_half_bytes(hw))
    qb = greedy_chunks(b_col_bytes, slot_capacity_bytes(hw))
    n_r, n_q = len(rb) - 1, len(qb) - 1
    row_nonempty = _segment_sum((problem.a_row_nnz > 0).astype(np.int64), rb)
    row_elems = _segment_sum(problem.a_row_nnz, rb)
    col_nonempty = _segment_sum((col_nnz > 0).astype(np.int64), qb)
    col_elems = _segment_sum(col_nnz, qb)
    steps = np.outer(row_nonempty, col_elems) + np.outer(row_elems, col_nonempty)
    pairs = np.outer(row_nonempty, col_nonempty)
    engine = 1 + ceil_div(steps, p)
    a_fetch = np.zeros((n_r, n_q), dtype=np.int64)
    a_fetch[:, 0] = _segment_sum(a_bytes, rb)
    b_fetch = np.tile(_segment_sum(b_col_bytes, qb), (n_r, 1))
    c_write = np.zeros((n_r, n_q), dtype=np.int64)
    c_write[:, -1] = _segment_sum(problem.c_row_bytes, rb)
    # A fetched B element is useful to a row chunk when the chunk has a nonzero in its row k.
    chunk_of_row = np.repeat(np.arange(n_r), np.diff(rb))
    chunk_of_elem = np.repeat(chunk_of_row, problem.a_row_nnz)
    used = np.unique(chunk_of_elem * problem.b.shape[0] + a.indices)
    useful_elems = int(problem.b_row_nnz[used % problem.b.shape[0]].sum())
    return [
        ChunkTable(
            name="inner",
            engine_cycles=engine.ravel(),
            fetch_bytes={"a": a_fetch.ravel(), "b": b_fetch.ravel(), "partial": _zeros(n_r * n_q)},
            write_bytes={"c": c_write.ravel(), "partial": _zeros(n_r * n_q)},
            units={"multipliers": ceil_div(problem.multiplies, p), "intersect": int(steps.sum() // p)},
            counters={
                "intersections": int(pairs.sum()),
                "effectual_outputs": int(problem.row_nnz_c.sum()),
                "b_elements_fetched": int(problem.b.nnz) * n_r,
                "b_elements_useful": useful_elems,
                "row_chunks": n_r,
                "column_blocks": n_q,
            },
        )
    ]


# --------------------------------------------------------------------------------------------
# Outer product
# --------------------------------------------------------------------------------------------


def map_outer(problem: SpGEMMProblem) -> list[ChunkTable]:
    """Outer product (OuterSPACE): a multiply phase, then a merge phase.

    Multiply: chunks of k (column k of A in CSC with row k of B, up to a slot). Per k with
    both non-empty: ``1 + |A[:, k]| · ceil(|B[k, :]| / multipliers)`` cycles; it writes
    ``|A[:, k]|`` partial rows (a header of row index and length, plus the products).
    Merge: row chunks of C; row i reads its partial rows back and merges them as
    :func:`_merge_rows` says, then writes C.
    """
    hw = problem.hw
    p, idx_b = hw.spgemm.multipliers, hw.spgemm.index_bytes
    pp = partial_bytes(hw)
    a_col_nnz = np.bincount(problem.a.indices, minlength=problem.a.shape[1]).astype(np.int64)
    b_nnz = problem.b_row_nnz
    live = (a_col_nnz > 0) & (b_nnz > 0)
    fetch_a = idx_b + a_col_nnz * element_bytes(hw)
    fetch_b = 2 * idx_b + b_nnz * element_bytes(hw)
    kb = greedy_chunks(fetch_a + fetch_b, slot_capacity_bytes(hw))
    mult = np.where(live, 1 + a_col_nnz * ceil_div(b_nnz, p), 0)
    partial_out = np.where(live, a_col_nnz * (2 * idx_b + b_nnz * pp), 0)
    multiply = ChunkTable(
        name="outer.multiply",
        engine_cycles=_segment_sum(mult, kb),
        fetch_bytes={
            "a": _segment_sum(fetch_a, kb), "b": _segment_sum(fetch_b, kb),
            "partial": _zeros(len(kb) - 1),
        },
        write_bytes={"c": _zeros(len(kb) - 1), "partial": _segment_sum(partial_out, kb)},
        units={"multipliers": int(mult.sum())},
    )
    # Merge phase: row i has one partial row per nonzero a_ik whose B row is non-empty.
    lists = _segment_sum((problem.b_len_per_a > 0).astype(np.int64), problem.a.indptr)
    elems = problem.row_products
    read = np.where(lists > 0, lists * 2 * idx_b + elems * pp, 0)
    merge = _merge_phase(problem, "outer.merge", lists, elems, read, np.zeros_like(elems), False)
    return [multiply, merge]


# --------------------------------------------------------------------------------------------
# Row-wise (Gustavson) with a merge tree
# --------------------------------------------------------------------------------------------


def map_gustavson(problem: SpGEMMProblem) -> list[ChunkTable]:
    """Row-wise product with a radix-``merger_radix`` merger (MatRaptor / Gamma style).

    Row chunks as for the hash dataflow (A rows plus their streamed B rows, up to a slot).
    The multiplier front end takes one cycle per A nonzero and per B beat
    (:func:`b_row_beats`); the merger's first pass consumes the products as they come.
    """
    hw = problem.hw
    lists = _segment_sum((problem.b_len_per_a > 0).astype(np.int64), problem.a.indptr)
    front = problem.a_row_nnz + _segment_sum(b_row_beats(problem.b_len_per_a, hw), problem.a.indptr)
    no_partials = np.zeros_like(lists)
    return [
        _merge_phase(problem, "gustavson", lists, problem.row_products, no_partials, front, True)
    ]


@dataclass
class _MergeRows:
    cycles: np.ndarray  # engine cycles per row
    stalls: np.ndarray  # cycles the multiplier front end waits on the merger, per row
    spill: np.ndarray  # intermediate bytes spilled per row (written once, read once)
    merger_busy: int  # cycles the merger consumes input, all rows


def _merge_rows(
    problem: SpGEMMProblem, lists: np.ndarray, elems: np.ndarray, front: np.ndarray
) -> _MergeRows:
    """Per-row merge cycles, multiplier stalls and intermediate bytes spilled to DRAM.

    Each merge pass costs ``ceil(input / multipliers) + merge_tree_depth``; the first pass
    overlaps the multiplier front end (``front`` cycles, 0 when the input comes from DRAM).
    Intermediates (all non-final pass outputs) spill when the row's largest one exceeds the
    scratchpad's merge half; each spilled pass then waits one DRAM latency. A row without
    products costs its front end plus one cycle (an empty C row is emitted).
    """
    hw = problem.hw
    p, depth = hw.spgemm.multipliers, merge_tree_depth(hw)
    pp = partial_bytes(hw)
    levels = merge_level_sizes(lists, elems, problem.row_nnz_c, hw.spgemm.merger_radix)
    zero = np.zeros_like(lists)
    if not levels:
        return _MergeRows(front + 1, zero + 1, zero, 0)
    busy = [np.where(lv > 0, ceil_div(lv, p), 0) for lv in levels]
    first = np.where(levels[0] > 0, busy[0] + depth, 0)
    later = zero.copy()
    inter = zero.copy()
    largest = zero.copy()
    n_later = zero.copy()
    for size, b in zip(levels[1:], busy[1:]):
        active = size > 0
        later += np.where(active, b + depth, 0)
        inter += np.where(active, size * pp, 0)
        largest = np.maximum(largest, np.where(active, size * pp, 0))
        n_later += active
    spills = largest > merge_half_bytes(hw)
    later += np.where(spills, n_later * hw.dram.latency_cycles, 0)
    cycles = np.where(lists > 0, np.maximum(front, first) + later, front + 1)
    return _MergeRows(cycles, cycles - front, np.where(spills, inter, 0), int(sum(busy).sum()))


def _merge_phase(
    problem: SpGEMMProblem, name: str, lists: np.ndarray, elems: np.ndarray,
    partial_read: np.ndarray, front: np.ndarray, row_wise: bool,
) -> ChunkTable:
    """Row-chunked merging: Gustavson (``row_wise``: A and B rows fetched, products made on the
    fly) or the outer product's merge phase (partial rows fetched from DRAM)."""
    hw = problem.hw
    rows = _merge_rows(problem, lists, elems, front)
    if row_wise:
        a_bytes, b_bytes = problem.a_row_bytes, problem.b_stream_row_bytes
    else:
        a_bytes = b_bytes = np.zeros_like(lists)
    rb = greedy_chunks(a_bytes + b_bytes + partial_read, slot_capacity_bytes(hw))
    return ChunkTable(
        name=name,
        engine_cycles=_segment_sum(rows.cycles, rb),
        fetch_bytes={
            "a": _segment_sum(a_bytes, rb),
            "b": _segment_sum(b_bytes, rb),
            "partial": _segment_sum(partial_read + rows.spill, rb),
        },
        write_bytes={
            "c": _segment_sum(problem.c_row_bytes, rb),
            "partial": _segment_sum(rows.spill, rb),
        },
        units={"multipliers": int(front.sum()), "merger": rows.merger_busy},
        counters={"merge_stall_cycles": int(rows.stalls.sum()) if row_wise else 0},
        row_bounds=rb,
    )


# --------------------------------------------------------------------------------------------
# Row-wise with the hash accumulator (the RTL engine)
# --------------------------------------------------------------------------------------------


@dataclass
class HashTrace:
    """Per-row results of the hash engine and its event counts (all rows, all passes).

    Attributes
    ----------
    cycles : ndarray
        Engine cycles of each row (docs/spgemm.md, "hash engine timing").
    spill_bytes : ndarray
        Spilled partial-product bytes of each row (each is written once and read back once).
    probes, kept, spilled : int
        Hash probes; products accumulated in the table; products spilled (each pass counted).
    bank_conflict_cycles : int
        Cycles beats took beyond their slowest single product because products shared a bank.
    accumulate_stall_cycles : int
        Cycles the multipliers waited for the accumulator beyond one probe cycle per beat.
    c_rows, c_cols, c_values : ndarray or None
        With ``functional=True``: C's nonzeros in the order the engine drains them.
    """

    cycles: np.ndarray
    spill_bytes: np.ndarray
    row_keys: np.ndarray  # distinct columns of each row of C (kept keys of all passes)
    probes: int = 0
    kept: int = 0
    spilled: int = 0
    extra_passes: int = 0
    passes_max: int = 1
    bank_conflict_cycles: int = 0
    accumulate_stall_cycles: int = 0
    block_start: int = 0  # first row of the block being simulated
    c_rows: np.ndarray | None = None
    c_cols: np.ndarray | None = None
    c_values: np.ndarray | None = None


@dataclass
class _Pass:
    beat_cycles: np.ndarray  # per beat
    drain_cycles: np.ndarray  # per row: the longest bank list (0 if nothing was kept)
    spill_order: np.ndarray  # indices of spilled products, in emission order
    drained: tuple | None  # (row, col, value, bank, first position) of kept keys


def hash_row_trace(problem: SpGEMMProblem, functional: bool = False) -> HashTrace:
    """Simulate the hash engine exactly, vectorized over blocks of rows.

    Every row has its own table (the engine drains and clears it between rows). A pass feeds
    a stream of beats of up to ``multipliers`` products; each product goes to bank
    ``bucket % hash_banks``, and each bank serves its products one probe per cycle in lane
    order. A key's probes are ``rank + 1``, where ``rank`` is the order of the key's first
    appearance among the keys of its bucket in this pass; ``rank >= hash_ways`` means the bucket
    is full of other keys: the product spills after ``hash_ways`` probes. The spilled products,
    in the order the engine emits them, form the next pass, until a pass spills nothing.
    """
    n = problem.n_rows
    trace = HashTrace(
        cycles=np.zeros(n, dtype=np.int64), spill_bytes=np.zeros(n, dtype=np.int64),
        row_keys=np.zeros(n, dtype=np.int64),
    )
    drained: list[tuple[np.ndarray, ...]] = []
    width = max(problem.n_cols, problem.hw.spgemm.hash_buckets)
    bounds = _blocks_by_work(problem.row_products, _BLOCK_PRODUCTS)
    bounds = _split_blocks(bounds, max(1, _DENSE_ENTRIES // width))
    scratch = _Scratch(min(int(np.diff(bounds).max(initial=0)) * width, _DENSE_ENTRIES))
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        trace.block_start = int(r0)
        _hash_block(problem, int(r0), int(r1), trace, drained if functional else None, scratch)
    # The table's keys are the structural nonzeros of C: no separate symbolic product needed.
    problem.__dict__.setdefault("row_nnz_c", trace.row_keys)
    if functional:
        row, col, val, pass_index = (
            np.concatenate([part[i] for part in drained]) for i in range(4)
        )
        order = np.lexsort((np.arange(len(row)), pass_index, row))  # stable within a pass
        trace.c_rows, trace.c_cols, trace.c_values = row[order], col[order], val[order]
    return trace


def _hash_block(
    problem: SpGEMMProblem, r0: int, r1: int, trace: HashTrace, drained: list | None,
    scratch: _Scratch,
) -> None:
    """Rows ``r0..r1-1`` through every pass; adds their cycles and counts to ``trace``."""
    hw = problem.hw
    p = hw.spgemm.multipliers
    rows = r1 - r0
    row_nnz = problem.a_row_nnz[r0:r1]
    e0, e1 = int(problem.a.indptr[r0]), int(problem.a.indptr[r1])
    n_beats = b_row_beats(problem.b_len_per_a[e0:e1], hw)
    beat_base = np.cumsum(n_beats) - n_beats
    prods = problem.product_stream(r0, r1)
    beat_in_row, lane = _divmod(prods.offset, p)
    beat = np.repeat(beat_base, problem.b_len_per_a[e0:e1]) + beat_in_row
    beat_row = np.repeat(np.repeat(np.arange(rows), row_nnz), n_beats)
    values = prods.values(problem) if drained is not None else None
    # Pass 0: per A nonzero one cycle to accept it and one to accept its B row's first beat
    # (later beats are accepted in the last probe cycle of the one before), the beats' probe
    # cycles, then the drain (one cycle per kept key, or one for an empty C row). An empty A
    # row costs its marker plus an empty C row.
    result = _hash_pass(
        prods.row, prods.col, beat, lane, len(beat_row), rows, hw, values, trace,
        scratch,
    )
    cycles = 2 * row_nnz
    cycles += np.bincount(beat_row, weights=result.beat_cycles, minlength=rows).astype(np.int64)
    cycles += np.where(row_nnz > 0, np.maximum(1, result.drain_cycles), 2)
    if drained is not None:
        drained.append(_drain_order(result.drained, r0, 0))
    srow, scol = prods.row[result.spill_order], prods.col[result.spill_order]
    svals = values[result.spill_order] if values is not None else None
    del prods, beat, lane, beat_row
    passes = 0
    while len(srow):
        # A spill pass: wait for the spilled products to come back, accept the first beat of
        # `multipliers` of them (one cycle), probe every beat, then drain the kept keys.
        passes += 1
        counts = np.bincount(srow, minlength=rows)
        cycles += spill_readback_cycles(counts, hw) + (counts > 0)
        trace.spill_bytes[r0:r1] += counts * partial_bytes(hw)
        trace.extra_passes += int(np.count_nonzero(counts))
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(len(srow), dtype=np.int64) - first[srow]
        per_row = ceil_div(counts, p)
        sbeat = np.concatenate([[0], np.cumsum(per_row)[:-1]])[srow] + pos // p
        result = _hash_pass(srow, scol, sbeat, pos % p, int(per_row.sum()), rows, hw, svals, trace,
                            scratch)
        beat_row = np.repeat(np.arange(rows), per_row)
        cycles += np.bincount(beat_row, weights=result.beat_cycles, minlength=rows).astype(np.int64)
        cycles += result.drain_cycles
        if drained is not None:
            drained.append(_drain_order(result.drained, r0, passes))
        srow, scol = srow[result.spill_order], scol[result.spill_order]
        svals = svals[result.spill_order] if svals is not None else None
    trace.passes_max = max(trace.passes_max, passes + 1)
    trace.cycles[r0:r1] = cycles


def _hash_pass(
    row: np.ndarray, col: np.ndarray, beat: np.ndarray, lane: np.ndarray, n_beats: int,
    n_rows: int, hw: HardwareSpec, values: np.ndarray | None, trace: HashTrace,
    scratch: _Scratch,
) -> _Pass:
    """One pass of the hash engine over a product stream (arrays in stream order).

    A beat takes ``max over banks of the probes it serves`` cycles (0 without products: its
    accept cycle is charged by the caller). Spilled products are emitted in the order beat,
    completion cycle within the beat, bank. The drain emits one entry of every bank's list per
    cycle: a row's drain takes as many cycles as its longest bank list.
    """
    eng = hw.spgemm
    nb, ways = eng.hash_banks, eng.hash_ways
    n = len(row)
    if n == 0:
        return _Pass(np.zeros(n_beats, dtype=np.int64), _zeros(n_rows), _zeros(0), None)
    bucket = hash_bucket(col, hw)
    bank = bucket & (nb - 1)
    keys = _keys_by_first_appearance(row, col, bucket, n_rows, hw, scratch)
    # Every product probes once more per key of its bucket that appeared before its own, up
    # to ``ways`` probes; a key with rank >= ways spills after ``ways`` probes.
    rank = keys.per_product(keys.rank)
    probes = np.minimum(rank, ways - 1).astype(np.int64)
    probes += 1
    busy, slowest = _beat_loads(beat, lane, bank, probes, n_beats, hw)
    spilled = np.flatnonzero(rank >= ways)
    n_spilled = len(spilled)
    trace.probes += int(probes.sum())
    trace.kept += n - n_spilled
    trace.spilled += n_spilled
    trace.bank_conflict_cycles += int((busy - slowest).sum())
    trace.accumulate_stall_cycles += int(np.maximum(busy - 1, 0).sum())
    kept = keys.rank < ways
    kept_bank = keys.bucket[kept] & (nb - 1)
    per_bank = np.bincount(keys.row[kept] * nb + kept_bank, minlength=n_rows * nb)
    trace.row_keys[trace.block_start : trace.block_start + n_rows] += per_bank.reshape(
        n_rows, nb).sum(axis=1)
    spill_order = _zeros(0)
    if n_spilled:
        spill_order = _spill_order(spilled, beat, bank, lane, probes, hw)
    drained = None
    if values is not None:
        sums = np.zeros(n, dtype=np.int64)
        np.add.at(sums, keys.first_of, values)
        drained = (keys.row[kept], keys.col[kept], sums[keys.first_pos][kept], kept_bank,
                   keys.first_pos[kept])
    return _Pass(
        beat_cycles=busy,
        drain_cycles=per_bank.reshape(n_rows, nb).max(axis=1),
        spill_order=spill_order,
        drained=drained,
    )


def _beat_loads(
    beat: np.ndarray, lane: np.ndarray, bank: np.ndarray, probes: np.ndarray, n_beats: int,
    hw: HardwareSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """Per beat: the busiest bank's probes (the beat's cycles) and the slowest product's probes.

    The products are laid out as a lanes × beats matrix (an empty lane probes 0 times), and
    each lane adds its probes to every lane of its beat that has the same bank: a lane's sum is
    its bank's load, and the largest in a beat is the busiest bank's. With ``multipliers``
    lanes this is ``multipliers`` passes over small integers, far cheaper than a beats × banks
    table (``hash_banks`` entries per beat).
    """
    p = hw.spgemm.multipliers
    most = p * max(1, int(probes.max()) if len(probes) else 1)
    dtype = np.uint8 if most <= 0xFF else np.uint16 if most <= 0xFFFF else np.int64
    bank_dtype = np.uint8 if hw.spgemm.hash_banks <= 0x100 else np.int64
    cell = lane * n_beats  # lane-major: each lane is one contiguous row of beats
    cell += beat
    lane_probes = np.zeros((p, n_beats), dtype=dtype)
    lane_probes.ravel()[cell] = probes
    lane_bank = np.zeros((p, n_beats), dtype=bank_dtype)
    lane_bank.ravel()[cell] = bank
    load = np.zeros_like(lane_probes)
    same = np.empty(lane_bank.shape, dtype=bool)
    for j in range(p):
        np.equal(lane_bank, lane_bank[j], out=same)
        load += lane_probes[j] * same
    return load.max(axis=0).astype(np.int64), lane_probes.max(axis=0).astype(np.int64)


class _Scratch:
    """Dense int32 tables of the hash model, reused across passes: every entry holds
    ``_EMPTY`` between uses (a pass clears what it wrote), so a pass costs its products, not
    the tables' size."""

    def __init__(self, entries: int) -> None:
        self.keys = np.full(entries, _EMPTY, dtype=np.int32)  # (row, column) -> first product
        self.cells = np.full(entries, _EMPTY, dtype=np.int32)  # (row, bucket) -> earliest key


_EMPTY = np.iinfo(np.int32).max


@dataclass
class _Keys:
    """Distinct keys (row, column) of a pass, in order of first appearance."""

    row: np.ndarray
    col: np.ndarray
    bucket: np.ndarray
    rank: np.ndarray  # order of first appearance among the keys of its (row, bucket)
    first_pos: np.ndarray  # position of the key's first product
    first_of: np.ndarray  # per product: the position of its key's first product

    def per_product(self, per_key: np.ndarray) -> np.ndarray:
        """A per-key quantity for every product (keys are numbered by first position)."""
        at_first = np.empty(len(self.first_of), dtype=per_key.dtype)
        at_first[self.first_pos] = per_key
        return at_first[self.first_of]


def _keys_by_first_appearance(
    row: np.ndarray, col: np.ndarray, bucket: np.ndarray, n_rows: int, hw: HardwareSpec,
    scratch: _Scratch,
) -> _Keys:
    """Group products by key and rank keys within their (row, bucket) by first appearance.

    No sorting: a dense (row, column) table takes each key's first product (``minimum.at``),
    which numbers the keys in order of first appearance; a dense (row, bucket) table then
    picks the earliest remaining key of every bucket, ``hash_ways`` rounds, each round's picks
    getting the next rank (keys left after the last round get ``hash_ways``: they spill).
    """
    n = len(row)
    if n >= _EMPTY:
        raise MappingError(f"hash model: a pass of {n} products exceeds the int32 tables")
    span = int(col.max()) + 1
    if n_rows * span > len(scratch.keys):  # wider than the tables: number the columns used
        used, col_id = np.unique(col, return_inverse=True)
        span, table = len(used), np.full(n_rows * len(used), _EMPTY, dtype=np.int32)
    else:
        col_id, table = col, scratch.keys
    key = row * span
    key += col_id
    pos = np.arange(n, dtype=np.int32)
    np.minimum.at(table, key, pos)
    first_of = table[key]
    first_pos = np.flatnonzero(first_of == pos)
    table[key[first_pos]] = _EMPTY
    d = len(first_pos)
    krow, kcol, kbucket = row[first_pos], col[first_pos], bucket[first_pos]
    ways, buckets = hw.spgemm.hash_ways, hw.spgemm.hash_buckets
    cell = krow * buckets
    cell += kbucket
    cells = scratch.cells if n_rows * buckets <= len(scratch.cells) else np.full(
        n_rows * buckets, _EMPTY, dtype=np.int32)
    # A key that loses round r has rank r + 1 at least: only the losers are written (about
    # half as many as the winners, which keep the rank they came in with).
    rank = np.zeros(d, dtype=np.uint8 if ways < 0xFF else np.int32)
    left, c = np.arange(d, dtype=np.int32), cell
    for r in range(ways):
        if not len(left):
            break
        np.minimum.at(cells, c, left)
        lost = cells[c] != left
        cells[c] = _EMPTY
        left, c = left[lost], c[lost]
        rank[left] = r + 1
    return _Keys(krow, kcol, kbucket, rank, first_pos, first_of)


def _spill_order(spilled, beat, bank, lane, probes, hw) -> np.ndarray:
    """Indices of spilled products in emission order: beat, completion cycle, bank."""
    with_spill = np.zeros(int(beat[-1]) + 1, dtype=bool)
    with_spill[beat[spilled]] = True
    sel = np.flatnonzero(with_spill[beat])  # products of the beats that spill
    s = sel[np.lexsort((lane[sel], bank[sel], beat[sel]))]
    group = beat[s] * hw.spgemm.hash_banks + bank[s]
    csum = np.cumsum(probes[s])
    gstart = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    before = np.append(0, csum[gstart[1:] - 1])
    done = np.empty(len(beat), dtype=np.int64)
    done[s] = csum - np.repeat(before, np.diff(np.append(gstart, len(s))))
    return spilled[np.lexsort((bank[spilled], done[spilled], beat[spilled]))]


def _drain_order(drained: tuple | None, r0: int, pass_index: int) -> tuple[np.ndarray, ...]:
    """Kept keys of one pass in drain order, with the pass index.

    Drain cycle ``t`` of a row emits entry ``t`` of each bank's list (lists are in insertion
    order), banks in index order: the order is row, list position, bank.
    """
    if drained is None:
        return _zeros(0), _zeros(0), _zeros(0), _zeros(0)
    row, col, val, bank, first = drained
    by_bank = np.lexsort((first, bank, row))
    group = row[by_bank] * (int(bank.max()) + 1) + bank[by_bank]
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    position = np.empty(len(row), dtype=np.int64)
    position[by_bank] = np.arange(len(row)) - np.repeat(starts, np.diff(np.append(starts, len(row))))
    order = np.lexsort((bank, position, row))
    return row[order] + r0, col[order], val[order], np.full(len(row), pass_index)


def map_hash(problem: SpGEMMProblem, trace: HashTrace | None = None) -> list[ChunkTable]:
    """Row-wise with the hash accumulator, chunked like :func:`map_gustavson`.

    Spilled partial products are written to DRAM and read back (both moved by the chunk's
    write-back transfer); the engine waits :func:`spill_readback_cycles` per spilling pass.
    """
    hw = problem.hw
    trace = trace or hash_row_trace(problem)
    rb = greedy_chunks(problem.a_row_bytes + problem.b_stream_row_bytes, slot_capacity_bytes(hw))
    front = problem.a_row_nnz + _segment_sum(b_row_beats(problem.b_len_per_a, hw), problem.a.indptr)
    spill = trace.spill_bytes
    return [
        ChunkTable(
            name="hash",
            engine_cycles=_segment_sum(trace.cycles, rb),
            fetch_bytes={
                "a": _segment_sum(problem.a_row_bytes, rb),
                "b": _segment_sum(problem.b_stream_row_bytes, rb),
                "partial": _zeros(len(rb) - 1),
            },
            write_bytes={
                "c": _segment_sum(problem.c_row_bytes, rb), "partial": _segment_sum(spill, rb),
            },
            readback_bytes=_segment_sum(spill, rb),
            units={"multipliers": int(front.sum()), "hash": int(trace.probes)},
            counters={
                "hash_collisions": int(trace.probes - trace.kept),
                "spilled_products": int(trace.spilled),
                "extra_passes": int(trace.extra_passes),
                "max_passes": int(trace.passes_max),
                "bank_conflict_cycles": int(trace.bank_conflict_cycles),
                "merge_stall_cycles": int(trace.accumulate_stall_cycles),
            },
            row_bounds=rb,
        )
    ]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _canonical(m: sp.spmatrix) -> sp.csr_matrix:
    out = sp.csr_matrix(m, dtype=np.int64, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _pattern(m: sp.csr_matrix) -> sp.csr_matrix:
    ones = np.ones(m.nnz, dtype=np.int8)
    return sp.csr_matrix((ones, m.indices, m.indptr), shape=m.shape)


def _segment_sum(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sums of ``values[bounds[i]:bounds[i+1]]`` (empty segments give 0)."""
    cum = np.concatenate([[0], np.cumsum(np.asarray(values, dtype=np.int64))])
    b = np.asarray(bounds, dtype=np.int64)
    return cum[b[1:]] - cum[b[:-1]]


def _divmod(values: np.ndarray, divisor: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.divmod`` of non-negative integers, by shifting and masking for a power of two."""
    if divisor & (divisor - 1):
        return np.divmod(values, divisor)
    return values >> (divisor.bit_length() - 1), values & (divisor - 1)


def _split_blocks(bounds: np.ndarray, rows: int) -> np.ndarray:
    """``bounds`` with every block longer than ``rows`` rows cut into pieces of ``rows``."""
    starts = [np.arange(r0, r1, rows) for r0, r1 in zip(bounds[:-1], bounds[1:])]
    return np.append(np.concatenate(starts or [_zeros(0)]), bounds[-1]).astype(np.int64)


def _blocks_by_work(work: np.ndarray, budget: int) -> np.ndarray:
    """Row boundaries of blocks of about ``budget`` work each (a heavier row stays alone)."""
    return greedy_chunks(np.maximum(work, 1), budget)
