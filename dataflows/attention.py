"""FlashAttention-style mapping of (sparse) attention onto the PE array and the vector unit.

One **work item** is ``cols <= array.cols`` query columns of one K/V head: consecutive queries
of one head in prefill, or the query heads of a GQA group (times the new tokens) in decode. Its
key blocks are visited in order, and every block runs in three phases (docs/attention.md):

* **QKᵀ** on the array, transposed so keys stream: ``Sᵀ[keys, queries] = K · Qᵀ``. Qᵀ, a
  ``head_dim × cols`` operand, is the stationary tile (``LOAD_B``, one per ``array.rows``
  channels) and the block's K rows stream through it (``LOAD_A``, ``COMPUTE`` with ``m`` = block
  rows), accumulating over the channel chunks into accumulator slot 0.
* **Online softmax** on the vector unit: ``ROWMAX`` updates each query's running max (and the
  correction of its running sum), ``RESCALE`` multiplies the output accumulator by the
  corrections, and ``EXP`` turns ``array.rows`` key rows at a time into ``Pᵀ = 2^(S − max)``
  in a weight slot — N:M-compressed when the pattern prunes scores N:M — adding to the sums.
  A partial block first loads its element mask (``LOAD_MASK``).
* **PV** on the array: ``Oᵀ[head_dim, queries] += Vᵀ · Pᵀ`` with Pᵀ stationary and the block's
  Vᵀ rows streaming (``LOAD_A``), into accumulator slot 1.

After the last block ``NORMALIZE`` divides Oᵀ by the sums and ``STORE_C`` writes it. Empty blocks
are never visited: nothing is loaded or computed for them (block skipping). Decode streams the KV
cache the same way; its columns are few (``heads / kv_heads`` per token), so its K/V rows feed
barely any MACs and the KV stream through the DMA port bounds it.

Why this orientation: each buffer has two ping-pong slots (docs/isa.md). Qᵀ needs
``head_dim / rows`` weight slots and Pᵀ needs one, so Qᵀ is reloaded for every block (a small
``head_dim × cols`` tile); keys and values stream as the A operand with one DRAM row each.

DRAM layout of one op (``AttentionLayout``): Qᵀ ``[batch, kv_heads, head_dim, group·q_len]``
(queries of a group's heads side by side), K ``[batch, kv_heads, kv_len, head_dim]`` (token
major, the KV cache), Vᵀ ``[batch, kv_heads, head_dim, kv_len]`` (channel major), Oᵀ like Qᵀ
(operand width: its STORE_C requantizes by ``prob_bits`` back to V's format), and the element
masks of partial blocks, one contiguous tile each.

Work items whose programs differ only in DRAM addresses take the same time, so the mapping
builds one program per **signature** (columns, block rows, partial flags) and the scheduler
counts it ``repeat`` times. Long items are cut into chunks that fit the controller's
instruction memories; the softmax state and Oᵀ stay on chip between them.
"""

from __future__ import annotations

import functools
import gc
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from dataflows.cost import mask_bytes
from dataflows.isa import Op
from dataflows.program import Allocator, Emitter, Program, Segment, Tensor
from dataflows.softmax_format import SoftmaxFormat
from workloads.arith import ceil_div
from workloads.errors import MappingError
from workloads.generators.attention import EMPTY, FULL, AttentionMask, build_mask
from workloads.spec import AttentionOp, DenseAttention, HardwareSpec

__all__ = [
    "TAG_Q",
    "TAG_K",
    "TAG_SOFTMAX",
    "TAG_V",
    "TAG_OUT",
    "TAG_EST",
    "PHASE_TAGS",
    "Block",
    "WorkItem",
    "AttentionLayout",
    "AttentionWork",
    "AttentionPlan",
    "plan_attention",
    "item_program",
    "attention_segments",
    "dense_reference",
    "attention_macs",
    "S_SLOT",
    "O_SLOT",
]

#: Program tags (``Program.tags``): which phase an instruction works for, indexing PHASES.
#: TAG_EST marks the estimation work of data-dependent patterns (``attention_estimate``).
TAG_Q, TAG_K, TAG_SOFTMAX, TAG_V, TAG_OUT, TAG_EST = range(6)
PHASES = ("q", "k", "softmax", "v", "out", "estimate")

#: Phases reported in the statistics and the tags that make them up.
PHASE_TAGS = {"estimate": (TAG_EST,), "qk": (TAG_Q, TAG_K), "softmax": (TAG_SOFTMAX,),
              "pv": (TAG_V,), "output": (TAG_OUT,)}

#: Accumulator slots: the score tile Sᵀ and the output Oᵀ.
S_SLOT, O_SLOT = 0, 1

@dataclass(frozen=True, slots=True)
class Block:
    """A key block a work item visits: its index, its rows (the last may be ragged) and whether
    some of its elements are masked (then its mask is loaded).

    As a *step* of a program, consecutive full blocks are merged (``count`` of them, ``rows``
    in all): one longer stream of keys costs one Qᵀ reload, one DMA latency per channel chunk
    and one COMPUTE pipeline fill instead of ``count``.
    """

    index: int
    rows: int
    partial: bool
    count: int = 1


@dataclass(frozen=True, eq=False)
class Visits:
    """The key blocks a work item visits, in order, as arrays: index, rows and whether partial.

    A million-token prefill visits billions of blocks, too many for an object each; a
    :class:`Block` is made only where a program is written (iteration yields them). Compared
    by identity: the work items of one query block share one.
    """

    index: np.ndarray
    rows: np.ndarray
    partial: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)

    def __iter__(self) -> Iterator[Block]:
        for j, r, p in zip(self.index.tolist(), self.rows.tolist(), self.partial.tolist()):
            yield Block(j, r, p)


@dataclass(frozen=True, slots=True)
class Steps:
    """Merged steps as arrays (``Block`` fields): consecutive full blocks run as one."""

    index: np.ndarray
    rows: np.ndarray
    partial: np.ndarray
    count: np.ndarray

    def blocks(self, lo: int = 0, hi: int | None = None) -> tuple[Block, ...]:
        cut = slice(lo, hi)
        return tuple(Block(*f) for f in zip(self.index[cut].tolist(), self.rows[cut].tolist(),
                                            self.partial[cut].tolist(), self.count[cut].tolist()))


def merge_arrays(index: np.ndarray, rows: np.ndarray, partial: np.ndarray, block: int,
                 max_rows: int, breaks: np.ndarray | None = None) -> Steps:
    """Runs of consecutive full blocks (``block`` rows each, a ragged one only last) merged
    greedily into steps of at most ``max_rows`` rows, a multiple of ``block``: the ``p``-th
    block of a run opens a step when ``p`` is a multiple of ``max_rows // block``.
    ``breaks``: positions where another item's blocks begin (many items merged in one call)."""
    n = index.size
    full = ~partial
    cont = np.zeros(n, dtype=bool)
    cont[1:] = full[1:] & full[:-1] & (index[1:] == index[:-1] + 1)
    if breaks is not None:
        cont[breaks] = False
    run_start = np.flatnonzero(~cont)
    pos = np.arange(n) - run_start[np.cumsum(~cont) - 1] if n else np.zeros(0, np.int64)
    starts = np.flatnonzero(~cont | (pos % max(1, max_rows // block) == 0))
    rows_sum = np.add.reduceat(rows, starts) if n else rows[:0]
    return Steps(index[starts], rows_sum, partial[starts], np.diff(np.append(starts, n)))


class WorkItem(NamedTuple):
    """Query columns ``col0 .. col0+cols-1`` of K/V head ``group`` of sequence ``batch``.

    Column ``c`` of a group is query ``c % q_len`` of head ``group·g + c // q_len`` (g query
    heads per K/V head). ``mask_offset`` is the byte offset of its first partial block's mask.
    A named tuple, not a frozen dataclass: a million-token prefill makes 1.8 M of them (its
    dense baseline included), five times faster to build.
    """

    batch: int
    group: int
    col0: int
    cols: int
    blocks: Visits
    mask_offset: int


@dataclass(frozen=True, slots=True)
class AttentionLayout:
    """Where one attention op's tensors live in DRAM (see the module docstring), placed one
    after the other by the program layer's :class:`~dataflows.program.Allocator`."""

    tensors: dict[str, Tensor]
    q: int
    k: int
    v: int
    o: int
    masks: int
    mask_bytes: int

    @classmethod
    def of(cls, op: AttentionOp, hw: HardwareSpec, total_mask_bytes: int) -> AttentionLayout:
        db, d = hw.data_bytes, op.head_dim
        cols = op.heads // op.groups * op.queries
        rows = op.batch * op.groups * d
        kv_rows = op.batch * op.groups * op.kv_len
        dram = Allocator()
        q = dram.alloc(f"{op.name}.QT", rows, cols, db)
        k = dram.alloc(f"{op.name}.K", kv_rows, d, db)
        v = dram.alloc(f"{op.name}.VT", rows, op.kv_len, db)
        o = dram.alloc(f"{op.name}.OT", rows, cols, db)
        masks = dram.alloc(f"{op.name}.masks", 1, total_mask_bytes, 1, "mask_tiles",
                           total_mask_bytes)
        return cls(dram.tensors, q.addr, k.addr, v.addr, o.addr, masks.addr, total_mask_bytes)


# --------------------------------------------------------------------------------------------
# Work items from a mask
# --------------------------------------------------------------------------------------------


def _columns(op: AttentionOp, col0: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(head within the group, query index) of columns ``col0 .. col0+cols-1``."""
    c = np.arange(col0, col0 + cols)
    return c // op.queries, c % op.queries


def item_pairs(op: AttentionOp, block: int, group: int, col0: int, cols: int) -> tuple:
    """The (head, query block) pairs columns ``col0 .. col0+cols-1`` of a group touch."""
    g, q_len = op.heads // op.groups, op.queries
    h_in, q0 = divmod(col0, q_len)
    if q0 + cols <= q_len and q0 // block == (q0 + cols - 1) // block:
        return ((group * g + h_in, q0 // block),)  # within one query block: the common case
    pairs = []
    for h_in in range(col0 // q_len, (col0 + cols - 1) // q_len + 1):
        q0 = max(col0, h_in * q_len) - h_in * q_len
        q1 = min(col0 + cols, (h_in + 1) * q_len) - h_in * q_len
        pairs.extend((group * g + h_in, qb) for qb in range(q0 // block, (q1 - 1) // block + 1))
    return tuple(pairs)


def _union_blocks(op: AttentionOp, mask: AttentionMask, b: int, pairs: tuple) -> Visits:
    """Key blocks any pair attends to; full only where every pair's block is full."""
    if mask.state is None:
        return _union_rows(op, mask, b, pairs)
    heads, qbs = zip(*pairs)
    states = mask.state[b, list(heads), list(qbs)]  # [pairs, kv_blocks]
    visit = np.flatnonzero((states != EMPTY).any(axis=0))
    if mask.fill is not None:  # skipped only to save work: computed where the block runs anyway
        states = np.where(states == EMPTY, mask.fill[list(qbs)], states)
    full = (states[:, visit] == FULL).all(axis=0)
    return Visits(visit, np.minimum(mask.block, op.kv_len - visit * mask.block), ~full)


def _union_rows(op: AttentionOp, mask: AttentionMask, b: int, pairs: tuple) -> Visits:
    """:func:`_union_blocks` from the mask's rows (a mask kept without its grid)."""
    rows = [mask.row(b, h, qb) for h, qb in pairs]
    visit = rows[0][0] if len(rows) == 1 else np.unique(np.concatenate([k for k, _ in rows]))
    states = np.zeros((len(rows), visit.size), dtype=np.uint8)  # a missing block: EMPTY
    for i, (kbs, st) in enumerate(rows):
        states[i, np.searchsorted(visit, kbs)] = st
    full = (states == FULL).all(axis=0)
    return Visits(visit, np.minimum(mask.block, op.kv_len - visit * mask.block), ~full)


def item_mask(op: AttentionOp, mask: AttentionMask, item: WorkItem, block: Block) -> np.ndarray:
    """The element mask of one visited block of a work item: ``bool[block rows, cols]``."""
    g = op.heads // op.groups
    h_in, q = _columns(op, item.col0, item.cols)
    heads = item.group * g + h_in
    k0 = block.index * mask.block
    kv = np.arange(k0, k0 + block.rows)
    out = np.zeros((block.rows, item.cols), dtype=bool)
    qb = q // mask.block
    for h in np.unique(heads):
        sel = np.flatnonzero(heads == h)
        out[:, sel] = mask.elements(item.batch, int(h), q[sel], kv).T
        if mask.fill is None:
            # A head that skipped this block (another head of the item needs it) masks it out.
            states = mask.block_states(item.batch, int(h), qb[sel], block.index)
            out[:, sel] &= states[None, :] != EMPTY
    return out


@dataclass(frozen=True, eq=False)
class AttentionPlan:
    """The work items of one attention op, its DRAM layout and its N:M score pattern."""

    op: AttentionOp
    mask: AttentionMask
    items: tuple[WorkItem, ...]
    layout: AttentionLayout
    score_nm: tuple[int, int] | None


def _without_gc(fn):
    """Run ``fn`` with the cyclic garbage collector paused: a million-token plan and its
    segments allocate millions of acyclic containers (work items, lists, tuples), and each
    collection the allocations trigger traverses all of them again (a quarter of the plan's
    time at 262k tokens). Nothing is lost: cycles are collected once it runs again."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()
    return run


@_without_gc
def plan_attention(
    op: AttentionOp, hw: HardwareSpec, mask: AttentionMask | None = None
) -> AttentionPlan:
    """Cut an op into work items and find the blocks each visits.

    Raises
    ------
    MappingError
        If a tile of this op does not fit the buffers, or the scores are pruned N:M with a
        pattern the array cannot skip.
    """
    mask = mask if mask is not None else build_mask(op)
    _check_fits(op, hw, mask.score_nm)
    g = op.heads // op.groups
    # A grid shared by every head (a broadcast view: dense, causal, windows) has the same rows
    # for every head, so a union depends on the query blocks only.
    alike = mask.state is not None and mask.state.strides[1] == 0
    units = _units(op, mask.block, hw.array.cols)
    items, offset, unions, shared, run = [], 0, {}, {}, {}
    append, item = items.append, WorkItem  # local names: the loop below runs per work item
    for b in range(op.batch):
        for group in range(op.groups):
            for rel, qbs, tiles in units:
                # The column tiles of a unit share their blocks: its union is computed once
                # (once per batch element and query blocks for all heads when alike).
                got = unions.get((b, qbs)) if alike else None
                if got is None:
                    pairs = tuple((group * g + h, qb) for h, qb in rel)
                    got = _union(op, mask, b, pairs, shared, run)
                    if alike:
                        unions[b, qbs] = got
                blocks, partial_rows = got
                for col0, cols, row_bytes in tiles:
                    append(item(b, group, col0, cols, blocks, offset))
                    offset += partial_rows * row_bytes
    layout = AttentionLayout.of(op, hw, offset)
    return AttentionPlan(op, mask, tuple(items), layout, mask.score_nm)


def _units(op: AttentionOp, block: int, width: int) -> list[tuple]:
    """A group's column tiles (the same in every group) as units of consecutive tiles with
    the same (head within the group, query block) pairs: ``(pairs, query blocks, [(col0,
    cols, mask bytes per key row), …])``. A tile within one query block — nearly all of them —
    is classified in numpy, not one by one (a multi-pair tile never repeats: two disjoint
    tiles cannot both straddle one boundary)."""
    columns, q_len = op.heads // op.groups * op.queries, op.queries
    col0 = np.arange(0, columns, width)
    cols = np.minimum(width, columns - col0)
    h0, q0 = np.divmod(col0, q_len)
    h1, q1 = np.divmod(col0 + cols - 1, q_len)
    qb = q0 // block
    simple = (h0 == h1) & (qb == q1 // block)
    new = np.ones(col0.size, dtype=bool)
    new[1:] = ~simple[1:] | ~simple[:-1] | (h0[1:] != h0[:-1]) | (qb[1:] != qb[:-1])
    row_bytes = {n: mask_bytes(1, n) for n in set(cols.tolist())}  # element masks: rows alike
    tiles = [(c0, n, row_bytes[n]) for c0, n in zip(col0.tolist(), cols.tolist())]
    starts = np.flatnonzero(new).tolist()
    units = []
    for t0, t1 in zip(starts, starts[1:] + [col0.size]):
        c0, n = tiles[t0][:2]
        rel = ((int(h0[t0]), int(qb[t0])),) if simple[t0] else item_pairs(op, block, 0, c0, n)
        units.append((rel, tuple(q for _, q in rel), tiles[t0:t1]))
    return units


def _union(op: AttentionOp, mask: AttentionMask, b: int, pairs: tuple, shared: dict,
           run: dict) -> tuple[Visits, int]:
    """The Visits of ``pairs`` (one object for equal ones: memory, and one chunking per
    distinct one) and their partial rows (the element mask rows a work item loads)."""
    if mask.state is None and len(pairs) == 1:  # the common case of descriptor masks
        v, partial_rows = _row_visits(op, mask, *pairs[0], run)
    else:
        v = _union_blocks(op, mask, b, pairs)
        partial_rows = int(v.rows[v.partial].sum())
    return _shared(shared, v), partial_rows


#: Query blocks of a descriptor mask whose Visits are computed in one numpy pass.
_ROW_RUN = 256


def _row_visits(op: AttentionOp, mask: AttentionMask, h: int, qb: int,
                run: dict) -> tuple[Visits, int]:
    """One query block's Visits (views) and partial rows from its run of :data:`_ROW_RUN`
    rows, computed at once (``run`` keeps the last run: the plan asks in order)."""
    lo = qb - qb % _ROW_RUN
    if run.get("at") != (h, lo):
        kbs, st, bounds = mask.rows.flat(h, lo, min(lo + _ROW_RUN, mask.q_blocks))
        rows = np.minimum(mask.block, op.kv_len - kbs * mask.block)
        partial = st != FULL
        prefix = np.concatenate(([0], np.cumsum(rows * partial)))[bounds].tolist()
        run.update(at=(h, lo), arrays=(kbs, rows, partial), bounds=bounds.tolist(),
                   prefix=prefix)
    i, j = run["bounds"][qb - lo], run["bounds"][qb - lo + 1]
    kbs, rows, partial = run["arrays"]
    return Visits(kbs[i:j], rows[i:j], partial[i:j]), run["prefix"][qb - lo + 1] - run[
        "prefix"][qb - lo]


def _shared(shared: dict, v: Visits) -> Visits:
    """The Visits equal to ``v`` seen before, else ``v`` (registered). Keyed first by size and
    first, middle and last blocks; where those collide, by a 16-byte digest of the arrays (not
    a copy of them), and always compared in full on a hit, so never conflated. Most Visits of
    a vertical-slash prefill are distinct, and only collisions pay for a digest."""
    n = len(v)
    cheap = (n, int(v.index[0]), int(v.index[n // 2]), int(v.index[-1])) if n else (0,)
    seen = shared.get(cheap)
    if seen is None:
        shared[cheap] = v
        return v
    if isinstance(seen, Visits):  # a second one with these ends: digests from now on
        if _equal(seen, v):
            return seen
        seen = shared[cheap] = {_digest(seen): [seen]}
    bucket = seen.setdefault(_digest(v), [])
    for other in bucket:
        if _equal(other, v):
            return other
    bucket.append(v)
    return v


def _digest(v: Visits) -> bytes:
    digest = hashlib.blake2b(v.index.tobytes(), digest_size=16)
    digest.update(v.partial.tobytes())
    return digest.digest()


def _equal(a: Visits, b: Visits) -> bool:
    return np.array_equal(a.index, b.index) and np.array_equal(a.partial, b.partial)


def _pv_span(hw: HardwareSpec, nm: tuple[int, int] | None) -> int:
    """Key rows one PV COMPUTE covers: the PE rows, or rows/N·M of them when Pᵀ is N:M."""
    rows = hw.array.rows
    return rows if nm is None else rows // nm[0] * nm[1]


def max_step_rows(op: AttentionOp, hw: HardwareSpec) -> int:
    """Most key rows one step may stream: its Sᵀ tile must fit an accumulator slot, its K chunk
    an input slot and its row count the 16-bit ``m`` field (whole blocks only)."""
    acc_rows = hw.buffers.accumulator_bytes // 2 // (hw.array.cols * hw.acc_bytes)
    a_rows = hw.buffers.input_bytes // 2 // (hw.array.rows * hw.data_bytes)
    return max(op.block_size, min(acc_rows, a_rows, (1 << 16) - 1) // op.block_size * op.block_size)


def merge_steps(blocks, max_rows: int, block: int) -> tuple[Block, ...]:
    """Single blocks of ``block`` rows (a ragged one only last) merged into steps of at most
    ``max_rows`` key rows, a multiple of ``block`` (:func:`merge_arrays`)."""
    blocks = list(blocks)
    arrays = [np.array([getattr(b, f) for b in blocks], dtype=t)
              for f, t in (("index", np.int64), ("rows", np.int64), ("partial", bool))]
    return merge_arrays(*arrays, block, max_rows).blocks()


def _check_fits(op: AttentionOp, hw: HardwareSpec, nm: tuple[int, int] | None) -> None:
    if nm is not None and not hw.supports(*nm):
        raise MappingError(
            f"{op.name}: N:M on scores {nm[0]}:{nm[1]} needs the PE array to run that pattern "
            f"sparse; add {{n: {nm[0]}, m: {nm[1]}}} to the hardware's nm_patterns"
        )
    r, c, db = hw.array.rows, hw.array.cols, hw.data_bytes
    acc_rows = hw.buffers.accumulator_bytes // 2 // (c * hw.acc_bytes)
    tall = max(op.block_size, op.head_dim)
    if tall > acc_rows:
        raise MappingError(
            f"{op.name}: a score tile of {op.block_size} keys and an output tile of "
            f"{op.head_dim} channels must fit an accumulator slot of {acc_rows} rows of "
            f"{c} columns; enlarge buffers.accumulator_bytes or lower block_size"
        )
    span = _pv_span(hw, nm)
    a_bytes = max(op.block_size * r, op.head_dim * span) * db
    if a_bytes > hw.buffers.input_bytes // 2:
        raise MappingError(
            f"{op.name}: a K tile ({op.block_size} x {r}) or Vᵀ tile ({op.head_dim} x {span}) of "
            f"{a_bytes} B does not fit an input slot ({hw.buffers.input_bytes // 2} B); enlarge "
            f"buffers.input_bytes or lower block_size"
        )
    if r * c * db > hw.buffers.weight_bytes // 2:
        raise MappingError(
            f"{op.name}: a {r}x{c} Qᵀ or Pᵀ tile does not fit a weight slot "
            f"({hw.buffers.weight_bytes // 2} B); enlarge buffers.weight_bytes"
        )


# --------------------------------------------------------------------------------------------
# Programs
# --------------------------------------------------------------------------------------------


class _ItemWriter:
    """Emits one work item's steps (or one chunk of them) through the program layer's emitter.

    Per step: the element mask (partial blocks), QKᵀ into ``S_SLOT`` one channel chunk at a
    time, the online softmax's ROWMAX (and RESCALE of Oᵀ after the first step), then PV into
    ``O_SLOT`` one EXP tile of Pᵀ at a time. QKᵀ and PV stream their A operand the same way
    (:meth:`stream`).
    """

    def __init__(self, plan: AttentionPlan, item: WorkItem, first_index: int, hw: HardwareSpec) -> None:
        op, lay = plan.op, plan.layout
        self.plan, self.op, self.item, self.hw, self.nm = plan, op, item, hw, plan.score_nm
        self.em = Emitter()
        self.n_cols = op.heads // op.groups * op.queries
        base = item.batch * op.groups + item.group
        d, db = op.head_dim, hw.data_bytes
        self.q_addr = lay.q + (base * d * self.n_cols + item.col0) * db
        self.k_addr = lay.k + base * op.kv_len * d * db
        self.v_addr = lay.v + base * d * op.kv_len * db
        self.o_addr = lay.o + (base * d * self.n_cols + item.col0) * db
        v = item.blocks
        earlier = int(v.rows[v.partial & (v.index < first_index)].sum())
        self.mask_addr = lay.masks + item.mask_offset + mask_bytes(earlier, item.cols)
        self.s_acc, self.o_acc = self.em.slot("C", S_SLOT), self.em.slot("C", O_SLOT)

    def step(self, block: Block, opening: bool) -> None:
        """One step: ``opening`` if it is the item's very first (fresh max, sums and Oᵀ)."""
        mask = self.load_mask(block) if block.partial else None
        self.qk(block)
        self.rowmax(block, opening, mask)
        if not opening:
            self.em.emit(Op.RESCALE, TAG_SOFTMAX, reads=(self.o_acc,), writes=(self.o_acc,),
                         slot=O_SLOT, rows=self.op.head_dim, cols=self.item.cols)
        self.pv(block, opening, mask)

    def load_mask(self, block: Block) -> int:
        cols = self.item.cols
        m = self.em.buffers["mask"].claim()
        self.em.emit(Op.LOAD_MASK, TAG_SOFTMAX, writes=(self.em.slot("mask", m),), slot=m,
                     addr=self.mask_addr, stride=ceil_div(cols, 8), rows=block.rows, cols=cols)
        self.mask_addr += mask_bytes(block.rows, cols)
        return m

    def stream(self, tag: int, b: int, addr: int, stride: int, rows: int, a_cols: int,
               acc_slot: int, accumulate: bool, k: int, nm: tuple[int, int]) -> None:
        """LOAD_A ``rows × a_cols`` from DRAM, then COMPUTE them against weight slot ``b``."""
        em = self.em
        a = em.buffers["A"].claim()
        a_res, acc = em.slot("A", a), em.slot("C", acc_slot)
        em.emit(Op.LOAD_A, tag, writes=(a_res,), slot=a, addr=addr, stride=stride, rows=rows,
                cols=a_cols)
        em.emit(Op.COMPUTE, tag, reads=(a_res, em.slot("B", b)), writes=(acc,), slot=a, b_slot=b,
                c_slot=acc_slot, accumulate=accumulate, rows=rows, cols=self.item.cols, k=k,
                m=rows, nm_n=nm[0], nm_m=nm[1])

    def qk(self, block: Block) -> None:
        """Sᵀ = K · Qᵀ over the head's channels, ``array.rows`` of them per COMPUTE."""
        d, r, db = self.op.head_dim, self.hw.array.rows, self.hw.data_bytes
        k0 = block.index * self.op.block_size
        for c0 in range(0, d, r):
            kc = min(r, d - c0)
            b = self.em.buffers["B"].claim()
            self.em.emit(Op.LOAD_B, TAG_Q, writes=(self.em.slot("B", b),), slot=b,
                         addr=self.q_addr + c0 * self.n_cols * db, stride=self.n_cols * db,
                         rows=kc, cols=self.item.cols)
            self.stream(TAG_K, b, self.k_addr + (k0 * d + c0) * db, d * db, block.rows, kc,
                        S_SLOT, c0 > 0, kc, (0, 0))

    def rowmax(self, block: Block, opening: bool, mask: int | None) -> None:
        self.em.emit(Op.ROWMAX, TAG_SOFTMAX, reads=(self.s_acc,) + self._mask(mask),
                     c_slot=S_SLOT, accumulate=not opening, rows=block.rows, cols=self.item.cols,
                     mask=mask is not None, slot=mask or 0)

    def _mask(self, mask: int | None) -> tuple:
        return () if mask is None else (self.em.slot("mask", mask),)

    def pv(self, block: Block, opening: bool, mask: int | None) -> None:
        """Oᵀ += Vᵀ · Pᵀ, one EXP tile of Pᵀ (``_pv_span`` key rows) at a time."""
        op, em, nm = self.op, self.em, self.nm or (0, 0)
        k0, span = block.index * op.block_size, _pv_span(self.hw, self.nm)
        for p0 in range(0, block.rows, span):
            rows = min(span, block.rows - p0)
            b = em.buffers["B"].claim()
            em.emit(Op.EXP, TAG_SOFTMAX, reads=(self.s_acc,) + self._mask(mask),
                    writes=(em.slot("B", b),), c_slot=S_SLOT, b_slot=b, k=p0, rows=rows,
                    cols=self.item.cols, nm_n=nm[0], nm_m=nm[1], mask=mask is not None,
                    slot=mask or 0)
            # N:M keeps N of every M rows; a ragged group is padded (its extra rows are masked).
            k_rows = ceil_div(rows, nm[1]) * nm[0] if self.nm else rows
            a_cols = ceil_div(rows, nm[1]) * nm[1] if self.nm else rows
            db = self.hw.data_bytes
            self.stream(TAG_V, b, self.v_addr + (k0 + p0) * db, op.kv_len * db, op.head_dim,
                        a_cols, O_SLOT, not (opening and p0 == 0), k_rows, nm)

    def finish(self, lse_addr: int | None) -> None:
        """NORMALIZE Oᵀ by the running sums and store it, requantized: Oᵀ carries P̃'s
        ``prob_bits`` fraction bits on top of V's, so shifting them out gives V's format.
        In training (``lse_addr``) STATS then stores each column's log-sum-exp for the
        backward (``attention_backward``)."""
        d, cols, db = self.op.head_dim, self.item.cols, self.hw.data_bytes
        self.em.emit(Op.NORMALIZE, TAG_SOFTMAX, reads=(self.o_acc,), writes=(self.o_acc,),
                     slot=O_SLOT, rows=d, cols=cols)
        self.em.emit(Op.STORE_C, TAG_OUT, reads=(self.o_acc,), slot=O_SLOT, addr=self.o_addr,
                     stride=self.n_cols * db, rows=d, cols=cols, requant=True,
                     shift=SoftmaxFormat.of(self.hw).prob_bits)
        if lse_addr is not None:
            base = self.item.batch * self.op.groups + self.item.group
            self.em.emit(Op.STATS, TAG_OUT, reads=(self.o_acc,), accumulate=True, rows=1,
                         cols=cols, addr=lse_addr + (base * self.n_cols + self.item.col0)
                         * self.hw.acc_bytes)


def item_program(
    plan: AttentionPlan,
    item: WorkItem,
    blocks: tuple[Block, ...],
    first: bool,
    last: bool,
    hw: HardwareSpec,
    lse_addr: int | None = None,
) -> Program:
    """The tile program of ``blocks`` (steps) of one work item (all of them, or one chunk).

    ``first``: the chunk starts the item (resets the running max and sums, overwrites Oᵀ);
    ``last``: it ends it (NORMALIZE, then STORE_C of Oᵀ; in training, with ``lse_addr``, the
    STATS store of the log-sum-exps).
    """
    writer = _ItemWriter(plan, item, blocks[0].index if blocks else 0, hw)
    for i, block in enumerate(blocks):
        writer.step(block, first and i == 0)
    if last:
        writer.finish(lse_addr)
    program = writer.em.program
    program.tensors = dict(plan.layout.tensors)
    return program


def _step_instrs(steps: Steps, d: int, hw: HardwareSpec, nm) -> np.ndarray:
    """``[steps, 3]``: the DMA, PE and vector instructions each step adds (RESCALE counted);
    a view of a unit-major array (:func:`chunk_bounds_of` sums each unit's row)."""
    chunks = ceil_div(d, hw.array.rows)
    pv = -(-steps.rows // _pv_span(hw, nm))
    out = np.empty((3, pv.size), dtype=np.int64)
    np.add(steps.partial, 2 * chunks + pv, out=out[0])
    np.add(pv, chunks, out=out[1])
    np.add(pv, 2, out=out[2])
    return out.T


def chunk_bounds(needs: np.ndarray, depth: int, reserved: tuple[int, int, int],
                 what: str) -> list[tuple[int, int]]:
    """Greedy cuts ``[(lo, hi), …]`` of steps needing ``needs[i]`` (DMA, PE, vector)
    instructions so that every chunk, plus ``reserved``, fits each instruction memory."""
    return chunk_bounds_of(needs, [0], depth, reserved, what)[0]


def chunk_bounds_of(needs: np.ndarray, starts: list[int], depth: int,
                    reserved: tuple[int, int, int], what: str) -> list[list[tuple[int, int]]]:
    """:func:`chunk_bounds` of several items' steps at once (item ``i``'s from ``starts[i]``
    to the next start): per item, its cuts (global step indices)."""
    n = needs.shape[0]
    cum = np.zeros((3, n + 1), dtype=np.int64)
    np.cumsum(needs.T, axis=1, out=cum[:, 1:])
    limit = [depth - r for r in reserved]
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.append(starts[1:], n)
    # Every item's next chunk in one pass (a few searches per chunk, in numpy): the rounds
    # are as many as the longest item's chunks, not as many as all items' chunks.
    lo, active = starts.copy(), np.flatnonzero(starts < ends)
    rounds = []
    while active.size:
        at, hi = lo[active], ends[active]
        for u in range(3):
            hi = np.minimum(hi, np.searchsorted(cum[u], cum[u][at] + limit[u], "right") - 1)
        if (hi <= at).any():
            i = int(np.flatnonzero(hi <= at)[0])
            step = int(at[i])
            raise MappingError(f"{what} {step - starts[active[i]]} needs {needs[step].tolist()} "
                               f"DMA/PE/vector instructions; controller.instruction_depth="
                               f"{depth} is too small")
        rounds.append((active, at, hi))
        lo[active] = hi
        active = active[hi < ends[active]]
    return _per_item(rounds, starts.size)


def _per_item(rounds: list, items: int) -> list[list[tuple[int, int]]]:
    """The chunks of :func:`chunk_bounds_of`'s rounds, gathered per item in order."""
    if not rounds:
        return [[] for _ in range(items)]
    owner, lo, hi = (np.concatenate(parts) for parts in zip(*rounds))
    order = np.argsort(owner, kind="stable")  # rounds are in step order within an item
    pairs = list(zip(lo[order].tolist(), hi[order].tolist()))
    ends = np.cumsum(np.bincount(owner, minlength=items)).tolist()
    return [pairs[a:b] for a, b in zip([0] + ends[:-1], ends)]


def _cut(plan: AttentionPlan, visits: Visits, hw: HardwareSpec,
         training: bool) -> tuple[Steps, list[tuple[int, int]]]:
    """An item's merged steps and the chunks they are cut into (each becomes one program).
    STORE_C (and in training the STATS store) and NORMALIZE of the last chunk are reserved in
    every chunk."""
    op = plan.op
    steps = merge_arrays(visits.index, visits.rows, visits.partial, op.block_size,
                         max_step_rows(op, hw))
    needs = _step_instrs(steps, op.head_dim, hw, plan.score_nm)
    reserved = (2 if training else 1, 0, 1)
    return steps, chunk_bounds(needs, hw.controller.instruction_depth, reserved,
                               "one step of key blocks, step")


# --------------------------------------------------------------------------------------------
# Segments for the scheduler
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttentionWork:
    """What one attention segment computes, per run (its ``Segment.work``); ``program.tags``
    index :data:`PHASES` (``tag_names``).

    Attributes
    ----------
    layer
        The attention layer (op) name.
    op
        The op, for labels and for the dense reference.
    pattern
        The mask's label.
    blocks, partial_blocks
        Key blocks this program visits, and how many of them load an element mask.
    skipped_blocks
        Key blocks of the work item that are never visited (counted on its first chunk).
    macs_dense
        Dense-attention MACs of the work item (all keys; counted on its first chunk).
    density, block_density
        Of the whole op's mask: attending (query, key) pairs and non-empty blocks.
    estimate
        The segment is the pattern's estimation work (``attention_estimate``), not attention:
        its block counts are 0 and all its instructions carry ``TAG_EST``.
    backward
        The segment is the op's backward (``attention_backward``): its blocks are query-block
        visits of backward items, its dense MACs those of a dense backward (five GEMMs).
    """

    layer: str
    op: AttentionOp
    pattern: str
    blocks: int
    partial_blocks: int
    skipped_blocks: int
    macs_dense: int
    density: float
    block_density: float
    estimate: bool = False
    backward: bool = False

    @property
    def tag_names(self) -> tuple[str, ...]:
        return PHASES


def attention_macs(rows: int, head_dim: int, cols: int, nm: tuple[int, int] | None) -> int:
    """MACs of one visited block: QKᵀ ``rows·d·cols`` plus PV (N/M of it under N:M scores)."""
    pv_rows = rows if nm is None else ceil_div(rows, nm[1]) * nm[0]
    return (rows + pv_rows) * head_dim * cols


def item_chunks(plan: AttentionPlan, item: WorkItem, hw: HardwareSpec,
                training: bool = False) -> list[tuple[Block, ...]]:
    """The steps of a work item, cut into chunks that each become one program (segment)."""
    if not len(item.blocks):
        return []
    steps, bounds = _cut(plan, item.blocks, hw, training)
    return [steps.blocks(lo, hi) for lo, hi in bounds]


def _signature(plan: AttentionPlan, item: WorkItem, shapes: bytes, first: bool, last: bool,
               training: bool) -> tuple:
    """A chunk program's key: what its instructions depend on besides DRAM addresses. The
    item's block total is not in it (a first chunk's segment carries it in its work only), so
    first chunks of items of different lengths share one program and one timing."""
    op = plan.op
    return ("attention-training" if training else "attention", op.head_dim, op.block_size,
            op.kv_len, plan.score_nm, item.cols, first, last, shapes)


@_without_gc
def attention_segments(
    layer: str, op: AttentionOp, hw: HardwareSpec, programs: dict, plan: AttentionPlan | None = None,
    lse_addr: int | None = None,
) -> list[Segment[AttentionWork]]:
    """The segments of one attention op, one per distinct program signature with its count.

    ``programs`` caches programs by signature across ops (pass the same dict for a schedule).
    ``lse_addr``: a training forward, which stores its log-sum-exps there for the backward.
    """
    plan = plan or plan_attention(op, hw)
    kv_blocks = ceil_div(op.kv_len, op.block_size)
    groups: dict[tuple, list] = {}
    # Work items with one Visits and one width have the same chunks and signatures: each such
    # class is cut and signed once, by its first item (the one that would have built any of its
    # programs first), and counted by its size.
    classes = _classes(plan.items)
    training = lse_addr is not None
    for item, members, steps, bounds, shapes in _class_cuts(plan, classes, hw, training):
        for i, (lo, hi) in enumerate(bounds):
            first, last = i == 0, i == len(bounds) - 1
            key = _signature(plan, item, shapes[i], first, last, training)
            # A first chunk's work also counts its item's skipped blocks: one segment per total.
            group = (key, len(item.blocks) if first else 0)
            entry = groups.get(group)
            if entry is None:
                if key not in programs:
                    programs[key] = item_program(plan, item, steps.blocks(lo, hi), first, last,
                                                 hw, lse_addr)
                work = _work(layer, plan, item, steps, (lo, hi), first, kv_blocks)
                entry = groups[group] = [work, 0]
            entry[1] += members
    return [
        Segment(work, count * op.repeat, key, programs[key])
        for (key, _), (work, count) in groups.items()
    ]


def _classes(items: tuple[WorkItem, ...]) -> dict[tuple, list]:
    """``(id of Visits, width) -> [first item, size]`` in order of first items (counted in C
    iterators: a million-token prefill has 917,504 items)."""
    keys = list(zip(map(id, map(attrgetter("blocks"), items)), map(attrgetter("cols"), items)))
    first = dict(zip(reversed(keys), reversed(items)))  # the earliest item of a key wins
    return {key: [first[key], n] for key, n in Counter(keys).items()}


#: Visited blocks merged and cut in one batch (bounds the batch's arrays, not the item count).
_BATCH_BLOCKS = 1 << 21


def _class_cuts(plan: AttentionPlan, classes: dict, hw: HardwareSpec,
                training: bool) -> Iterator[tuple]:
    """Per class of work items (in order): its first item, its size, and its Visits' merged
    steps, chunk bounds and per chunk the steps' shapes as bytes (:func:`shape_bytes`: equal
    bytes, equal programs up to addresses). The Visits are merged and cut
    in batches: one numpy call per batch, not per query block, and only a batch held at once."""
    done: dict[int, tuple] = {}
    batch, size = [], 0
    for item, members in classes.values():
        batch.append((item, members))
        size += len(item.blocks)
        if size >= _BATCH_BLOCKS:
            yield from _cut_batch(plan, batch, hw, training, done)
            batch, size = [], 0
            done.clear()  # a Visits object of a later batch is cut again (the same result)
    yield from _cut_batch(plan, batch, hw, training, done)


def _cut_batch(plan: AttentionPlan, batch: list, hw: HardwareSpec, training: bool,
               done: dict) -> Iterator[tuple]:
    op = plan.op
    distinct = list({id(item.blocks): item.blocks for item, _ in batch if len(item.blocks)}
                    .values())
    if distinct:
        sizes = np.array([len(v) for v in distinct])
        breaks = np.cumsum(sizes) - sizes
        steps = merge_arrays(*(np.concatenate([getattr(v, f) for v in distinct])
                               for f in ("index", "rows", "partial")),
                             op.block_size, max_step_rows(op, hw), breaks)
        first_step = np.searchsorted(np.cumsum(steps.count) - steps.count, breaks)
        needs = _step_instrs(steps, op.head_dim, hw, plan.score_nm)
        cuts = chunk_bounds_of(needs, first_step.tolist(), hw.controller.instruction_depth,
                               (2 if training else 1, 0, 1), "one step of key blocks, step")
        raw, size = shape_bytes(steps), SHAPE_BYTES
        for v, bounds in zip(distinct, cuts):
            done[id(v)] = (steps, bounds, [raw[lo * size : hi * size] for lo, hi in bounds])
    for item, members in batch:
        yield (item, members, *done.get(id(item.blocks), (None, [], [])))


#: Bytes per step in :func:`shape_bytes`.
SHAPE_BYTES = 8


def shape_bytes(steps: Steps) -> bytes:
    """Steps' shapes as ``uint32`` pairs ``(rows, count)``, count 0 for a partial step (a
    partial step is always one block: :func:`merge_arrays` merges full blocks only). A third
    of the ``int64`` triples: a million-token prefill's keys copy 58 M steps of them."""
    return np.stack([steps.rows, np.where(steps.partial, 0, steps.count)],
                    axis=1).astype(np.uint32).tobytes()


def _work(layer: str, plan: AttentionPlan, item: WorkItem, steps: Steps, cut: tuple[int, int],
          first: bool, kv_blocks: int) -> AttentionWork:
    """What one chunk's segment (steps ``cut``) computes; a first chunk carries its item's
    skipped blocks and dense MACs."""
    op, (lo, hi) = plan.op, cut
    return AttentionWork(
        layer, op, plan.mask.label, int(steps.count[lo:hi].sum()),
        int(steps.partial[lo:hi].sum()), kv_blocks - len(item.blocks) if first else 0,
        2 * op.kv_len * op.head_dim * item.cols if first else 0,
        plan.mask.density, plan.mask.block_density)


def empty_items(plan: AttentionPlan) -> int:
    """Work items whose queries attend no key at all (nothing runs; their output is not written)."""
    return sum(1 for item in plan.items if not item.blocks)


def dense_reference(op: AttentionOp) -> AttentionOp:
    """The same op with dense, non-causal attention: the baseline of the speedup figures."""
    return op.model_copy(update={"pattern": DenseAttention(), "causal": False})


def iter_blocks(plan: AttentionPlan) -> Iterator[tuple[WorkItem, Block]]:
    """Every (work item, visited block) pair of a plan."""
    for item in plan.items:
        for block in item.blocks:
            yield item, block


__all__ += [
    "item_mask",
    "item_chunks",
    "merge_steps",
    "max_step_rows",
    "empty_items",
    "iter_blocks",
    "item_pairs",
    "shape_bytes",
]
