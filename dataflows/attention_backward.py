"""Attention backward, FlashAttention-2 style: recompute, dV, dP, dS, dQ, dK (docs/attention.md).

One backward **work item** is ``cols <= array.cols`` consecutive keys of one K/V head (FA2's
outer loop over key blocks). It visits, head by head of its GQA group, every query block that
attends to its keys — exactly the (head, query block, key block) cells the forward mask leaves
non-empty, so the backward skips what the forward skips — and per visit of ``R`` query rows:

* **recompute** ``S[R, keys] = Q · Kᵀ`` on the array (Q rows stream, Kᵀ stationary);
* ``STATS`` loads the visit's saved log-sum-exps ``L`` and ``D = rowsum(dO ∘ O)``;
* ``dP[R, keys] = dO · Vᵀ`` (dO rows stream, Vᵀ stationary);
* per ``array.rows`` query rows: ``PEXP`` turns S into ``P = 2^(S − L)`` (masked: 0) in a weight
  slot, ``DSCORE`` forms ``dS = P ∘ (dP − D)`` next to it and in an input slot, then
  ``dVᵀ += dOᵀ · P`` and ``dKᵀ += Qᵀ · dS`` accumulate on chip (dOᵀ, Qᵀ rows stream) and
  ``dQ[rows, d] = dS · K`` (K stationary) fills the visit's dQ tiles, which ``STORE_ADD`` adds
  to DRAM after its last rows (FA2's atomic add), one per channel chunk.

Five GEMMs of ``R · keys · d`` MACs per visit against the forward's two: the backward executes
2.5× the forward's MACs. After the last visit ``STORE_C`` writes dKᵀ and dVᵀ (accumulator
width). ``D`` comes from a pre-pass over the forward's items (``DSCORE`` in its D form on dOᵀ
and Oᵀ, then a ``STATS`` store); the training forward stores ``L`` (``attention.item_program``).

STATS, PEXP, DSCORE and STORE_ADD are model-only instructions (docs/isa.md): the RTL does not
execute them, so no backward program is verified on it; its GEMMs are ordinary LOAD_A/LOAD_B/
COMPUTE/STORE_C instructions. Layout (added to the forward's, accumulator-width words for
statistics and gradients): Q and dO token-major ``[b, kv_head, g·q, d]``, dOᵀ like Qᵀ, Kᵀ like
Vᵀ, L and D ``[b, kv_head, g·q]``, dQ ``[b, kv_head, g·q, d]``, dKᵀ and dVᵀ like Vᵀ, and the
element masks of partial visits (``keys`` bits per query row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataflows.attention import (
    TAG_K,
    TAG_OUT,
    TAG_Q,
    TAG_SOFTMAX,
    TAG_V,
    AttentionPlan,
    AttentionWork,
    Block,
    chunk_bounds,
    merge_arrays,
)
from dataflows.cost import mask_bytes
from dataflows.isa import Op
from dataflows.program import Allocator, Emitter, Program, Resource, Segment
from workloads.arith import ceil_div
from workloads.errors import MappingError
from workloads.generators.attention import EMPTY, FULL, GRID_LIMIT
from workloads.spec import HardwareSpec

__all__ = ["Visit", "BackwardItem", "backward_items", "backward_segments", "backward_macs",
           "d_prepass_segments"]


@dataclass(frozen=True, slots=True)
class Visit:
    """A run of query blocks of head ``head_in`` (within the group) one step visits: ``block``
    holds the first query block's index, the rows and the merged count (as a forward step)."""

    head_in: int
    block: Block


@dataclass(frozen=True, slots=True)
class BackwardItem:
    """Keys ``key0 .. key0+cols-1`` of K/V head ``group`` of sequence ``batch``."""

    batch: int
    group: int
    key0: int
    cols: int
    visits: tuple[Visit, ...]


def _visits(plan: AttentionPlan, b: int, group: int, key0: int, cols: int,
            max_rows: int) -> tuple[Visit, ...]:
    """The query blocks each head of the group runs against keys ``key0..``: those whose mask
    cells over these keys are not all empty; full only where every cell is full."""
    op, mask = plan.op, plan.mask
    g, blk = op.heads // op.groups, mask.block
    kbs = slice(key0 // blk, (key0 + cols - 1) // blk + 1)
    out: list[Visit] = []
    for h_in in range(g):
        states = mask.state[b, group * g + h_in, :, kbs]  # [q_blocks, key blocks]
        visit = np.flatnonzero((states != EMPTY).any(axis=1))
        if mask.fill is not None:  # skipped only to save work: computed where a block runs
            states = np.where(states == EMPTY, mask.fill[:, kbs], states)
        full = (states[visit] == FULL).all(axis=1)
        rows = np.minimum(blk, op.queries - visit * blk)
        steps = merge_arrays(visit, rows, ~full, blk, max_rows)
        out.extend(Visit(h_in, s) for s in steps.blocks())
    return tuple(out)


def max_visit_rows(plan: AttentionPlan, hw: HardwareSpec) -> int:
    """Most query rows one visit may hold: S, dP and dQ (one tile per channel chunk) side by
    side in an accumulator slot, the visit's Q chunk in an input slot (whole blocks only)."""
    acc_rows = hw.buffers.accumulator_bytes // 2 // (hw.array.cols * hw.acc_bytes)
    a_rows = hw.buffers.input_bytes // 2 // (hw.array.rows * hw.data_bytes)
    d_tiles = ceil_div(plan.op.head_dim, hw.array.rows)
    room = min(acc_rows // (2 + d_tiles), a_rows, (1 << 16) - 1)
    block = plan.op.block_size
    if room < block:
        raise MappingError(
            f"{plan.op.name}: the attention backward holds S, dP and dQ of a {block}-query "
            f"block ({2 + d_tiles} tiles of {block} rows) in one accumulator slot of {acc_rows} "
            f"rows; enlarge buffers.accumulator_bytes or lower block_size")
    return room // block * block


def backward_items(plan: AttentionPlan, hw: HardwareSpec) -> list[BackwardItem]:
    """The backward work items of a prefill op, with the query blocks each visits."""
    op = plan.op
    _check_fits(plan, hw)
    width, max_rows = hw.array.cols, max_visit_rows(plan, hw)
    return [BackwardItem(b, grp, k0, min(width, op.kv_len - k0),
                         _visits(plan, b, grp, k0, min(width, op.kv_len - k0), max_rows))
            for b in range(op.batch) for grp in range(op.groups)
            for k0 in range(0, op.kv_len, width)]


def _check_fits(plan: AttentionPlan, hw: HardwareSpec) -> None:
    op, r, db = plan.op, hw.array.rows, hw.data_bytes
    if plan.mask.state is None:
        # The backward walks key-block columns over every query block: the block grid, which a
        # mask beyond GRID_LIMIT does not keep (docs/attention.md, "Long context").
        raise MappingError(
            f"{op.name}: the attention backward needs the mask's block grid, and this one "
            f"(batch x heads x query blocks x key blocks) is over {GRID_LIMIT >> 20} MiB; "
            f"train at fewer tokens or a larger attention block_size")
    resident = 3 * ceil_div(op.head_dim, r) * r * hw.array.cols * db  # Kᵀ, Vᵀ and K tiles
    if resident > hw.buffers.weight_bytes // 2:
        raise MappingError(
            f"{op.name}: the attention backward keeps an item's Kᵀ, Vᵀ and K tiles ({resident} B) "
            f"in one weight slot ({hw.buffers.weight_bytes // 2} B); enlarge buffers.weight_bytes")
    acc_rows = hw.buffers.accumulator_bytes // 2 // (hw.array.cols * hw.acc_bytes)
    if 2 * op.head_dim > acc_rows:
        raise MappingError(
            f"{op.name}: the attention backward accumulates dKᵀ and dVᵀ ({2 * op.head_dim} rows) "
            f"in one accumulator slot of {acc_rows} rows; enlarge buffers.accumulator_bytes")


@dataclass(frozen=True, slots=True)
class BackwardLayout:
    """DRAM addresses of the backward's tensors (after the forward's, see the module docstring)."""

    tensors: dict
    q: int  # Q, token-major
    qt: int  # Qᵀ (the forward's)
    k: int  # K (the forward's)
    kt: int
    vt: int  # Vᵀ (the forward's)
    o_t: int  # Oᵀ (the forward's)
    do: int
    do_t: int
    lse: int
    d: int
    dq: int
    dkt: int
    dvt: int
    masks: int

    @classmethod
    def of(cls, plan: AttentionPlan, hw: HardwareSpec, total_mask_bytes: int) -> BackwardLayout:
        op, lay, db, ab = plan.op, plan.layout, hw.data_bytes, hw.acc_bytes
        d, cols = op.head_dim, op.heads // op.groups * op.queries
        heads_kv = op.batch * op.groups
        dram = _after_forward(plan)
        name = op.name
        addr = {
            "lse": dram.alloc(f"{name}.L", heads_kv, cols, ab).addr,  # first: lse_address
            "q": dram.alloc(f"{name}.Q", heads_kv * cols, d, db).addr,
            "kt": dram.alloc(f"{name}.KT", heads_kv * d, op.kv_len, db).addr,
            "do": dram.alloc(f"{name}.dO", heads_kv * cols, d, db).addr,
            "do_t": dram.alloc(f"{name}.dOT", heads_kv * d, cols, db).addr,
            "d": dram.alloc(f"{name}.D", heads_kv, cols, ab).addr,
            "dq": dram.alloc(f"{name}.dQ", heads_kv * cols, d, ab).addr,
            "dkt": dram.alloc(f"{name}.dKT", heads_kv * d, op.kv_len, ab).addr,
            "dvt": dram.alloc(f"{name}.dVT", heads_kv * d, op.kv_len, ab).addr,
            "masks": dram.alloc(f"{name}.bwd_masks", 1, total_mask_bytes, 1, "mask_tiles",
                                total_mask_bytes).addr,
        }
        return cls(dram.tensors, qt=lay.q, k=lay.k, vt=lay.v, o_t=lay.o, **addr)


def _after_forward(plan: AttentionPlan) -> Allocator:
    dram = Allocator()
    dram.tensors = dict(plan.layout.tensors)
    dram.end = max(t.addr + t.nbytes for t in plan.layout.tensors.values())
    return dram


def lse_address(plan: AttentionPlan, hw: HardwareSpec) -> int:
    """Where the training forward stores L (``[b, kv_head, g·q]`` accumulator words): the
    backward layout's first tensor."""
    op = plan.op
    return _after_forward(plan).alloc("L", op.batch * op.groups,
                                      op.heads // op.groups * op.queries, hw.acc_bytes).addr


# --------------------------------------------------------------------------------------------
# Programs
# --------------------------------------------------------------------------------------------


class _BackwardWriter:
    """Emits the visits of one backward item (or one chunk of them).

    Weight slot 0 holds the item's Kᵀ, Vᵀ and K tiles (one part each per channel chunk) for the
    whole chunk; weight slot 1 holds P and dS of the current query rows (two pairs of parts,
    alternating, so the vector unit can run one sub-tile ahead). Accumulator slot 0 holds S,
    dP and the dQ tiles (one per channel chunk) of a visit, ``dp_row`` rows apart; slot 1
    dVᵀ (rows ``0..d``) and dKᵀ (rows ``d..2d``).
    """

    def __init__(self, plan: AttentionPlan, item: BackwardItem, lay: BackwardLayout,
                 mask_addr: int, hw: HardwareSpec) -> None:
        op = plan.op
        self.op, self.item, self.lay, self.hw = op, item, lay, hw
        self.em = Emitter()
        self.n_cols = op.heads // op.groups * op.queries
        self.d_chunks = [(c0, min(hw.array.rows, op.head_dim - c0))
                         for c0 in range(0, op.head_dim, hw.array.rows)]
        self.base = item.batch * op.groups + item.group
        self.mask_addr = mask_addr
        self.regs = Resource()  # the vector unit's per-query registers (L, D)
        # Fixed places in accumulator slot 0, so a visit's S waits only for the last reads of
        # the previous S, not for everything the previous visit did.
        self.dp_row = max_visit_rows(plan, hw)
        self.dq_row = 2 * self.dp_row
        self.turn = 0
        self.dvdk_open = False

    def part(self, buffer: str, slot: int, key) -> Resource:
        return self.em.buffers[buffer].part(slot, key)

    def load_resident(self) -> None:
        """Kᵀ and Vᵀ chunks (``[channels, keys]``) and K chunks (``[keys, channels]``)."""
        em, it, db, d = self.em, self.item, self.hw.data_bytes, self.op.head_dim
        em.buffers["B"].place(0)
        kv = self.op.kv_len
        for c0, kc in self.d_chunks:
            for name, base in (("kt", self.lay.kt), ("vt", self.lay.vt)):
                em.emit(Op.LOAD_B, TAG_K if name == "kt" else TAG_V,
                        writes=(self.part("B", 0, (name, c0)),), slot=0,
                        b_row=self._b_row(name, c0), addr=base + ((self.base * d + c0) * kv + it.key0) * db, stride=kv * db,
                        rows=kc, cols=it.cols)
            em.emit(Op.LOAD_B, TAG_V, writes=(self.part("B", 0, ("k", c0)),), slot=0,
                    b_row=self._b_row("k", c0), addr=self.lay.k + ((self.base * kv + it.key0) * d + c0) * db, stride=d * db,
                    rows=it.cols, cols=kc)

    def visit(self, v: Visit) -> None:
        """One visit: S, the statistics, dP, then the gradients per ``array.rows`` query rows."""
        q0 = (v.head_in * self.op.queries + v.block.index * self.op.block_size)
        rows = v.block.rows
        mask = self.load_mask(rows) if v.block.partial else None
        for addr in (self.lay.lse, self.lay.d):  # the log-sum-exp, then D
            self.em.emit(Op.STATS, TAG_SOFTMAX, writes=(self.regs,), rows=1, cols=rows,
                         addr=addr + (self.base * self.n_cols + q0) * self.hw.acc_bytes)
        self.stream_gemm(TAG_K, self.lay.q, q0, rows, "kt", 0)   # S = Q · Kᵀ
        self.stream_gemm(TAG_V, self.lay.do, q0, rows, "vt", self.dp_row)  # dP = dO · Vᵀ
        for p0 in range(0, rows, self.hw.array.rows):
            self.sub_tile(q0, p0, min(self.hw.array.rows, rows - p0), mask)
        self.add_dq(q0, rows)

    def load_mask(self, rows: int) -> Resource:
        m = self.em.buffers["mask"].claim()
        res = self.em.slot("mask", m)
        self.em.emit(Op.LOAD_MASK, TAG_SOFTMAX, writes=(res,), slot=m, addr=self.mask_addr,
                     stride=ceil_div(self.item.cols, 8), rows=rows, cols=self.item.cols)
        self.mask_addr += mask_bytes(rows, self.item.cols)
        return res

    def stream_gemm(self, tag: int, base: int, q0: int, rows: int, b_name: str, c_row: int):
        """``[rows, keys]`` into accumulator slot 0 from row ``c_row``: token-major rows of
        ``base`` (Q or dO) streamed against the resident ``b_name`` chunks."""
        em, db, d = self.em, self.hw.data_bytes, self.op.head_dim
        acc = self.part("C", 0, c_row)
        for c0, kc in self.d_chunks:
            a = em.buffers["A"].claim()
            em.emit(Op.LOAD_A, TAG_Q if tag == TAG_K else tag, writes=(em.slot("A", a),),
                    slot=a, addr=base + ((self.base * self.n_cols + q0) * d + c0) * db,
                    stride=d * db, rows=rows, cols=kc)
            em.emit(Op.COMPUTE, tag, reads=(em.slot("A", a), self.part("B", 0, (b_name, c0))),
                    writes=(acc,), slot=a, b_slot=0, b_row=self._b_row(b_name, c0),
                    c_slot=0, c_row=c_row, accumulate=c0 > 0, rows=rows, cols=self.item.cols,
                    k=kc, m=rows)

    def _b_row(self, name: str, c0: int) -> int:
        """Row of a resident chunk in weight slot 0: Kᵀ chunks, then Vᵀ, then K."""
        d, width = self.op.head_dim, self.item.cols
        return {"kt": c0, "vt": d + c0, "k": 2 * d + c0 // self.hw.array.rows * width}[name]

    def sub_tile(self, q0: int, p0: int, rr: int, mask: Resource | None) -> None:
        """P and dS of query rows ``p0 .. p0+rr`` of the visit, then dVᵀ, dKᵀ and dQ from them."""
        em, r, it = self.em, self.hw.array.rows, self.item
        b_row = self.turn * 2 * r
        p_res, ds_res = self.part("B", 1, ("P", self.turn)), self.part("B", 1, ("dS", self.turn))
        self.turn ^= 1
        masked = () if mask is None else (mask,)
        s_res, dp_res = self.part("C", 0, 0), self.part("C", 0, self.dp_row)
        em.emit(Op.PEXP, TAG_SOFTMAX, reads=(s_res, self.regs) + masked, writes=(p_res,),
                c_slot=0, c_row=p0, b_slot=1, b_row=b_row, rows=rr, cols=it.cols,
                mask=mask is not None)
        a = em.buffers["A"].claim()
        em.emit(Op.DSCORE, TAG_SOFTMAX, reads=(p_res, dp_res, self.regs),
                writes=(ds_res, em.slot("A", a)), slot=a, b_slot=1, b_row=b_row, c_slot=0,
                c_row=self.dp_row + p0, rows=rr, cols=it.cols)
        self.transposed_gemm(self.lay.do_t, q0 + p0, rr, p_res, b_row, 0)  # dVᵀ += dOᵀ · P
        # dQ before dKᵀ: dKᵀ's Qᵀ rows take the input slot that holds dS (claimed in turn).
        self.dq(a, p0, rr)
        self.transposed_gemm(self.lay.qt, q0 + p0, rr, ds_res, b_row + r, self.op.head_dim)
        self.dvdk_open = True

    def dq(self, a: int, p0: int, rr: int) -> None:
        """dQ rows ``p0 ..`` of the visit = dS · K (dS in input slot ``a``), one tile per
        channel chunk, each chunk's ``dp_row`` rows apart."""
        em, r, it = self.em, self.hw.array.rows, self.item
        for c0, kc in self.d_chunks:
            em.emit(Op.COMPUTE, TAG_V, reads=(em.slot("A", a), self.part("B", 0, ("k", c0))),
                    writes=(self.part("C", 0, ("dq", c0)),), slot=a, b_slot=0,
                    b_row=self._b_row("k", c0), c_slot=0,
                    c_row=self.dq_row + c0 // r * self.dp_row + p0, rows=rr, cols=kc,
                    k=it.cols, m=rr)

    def add_dq(self, q0: int, rows: int) -> None:
        """The visit's dQ added to DRAM, one STORE_ADD per channel chunk (FA2's atomic add)."""
        r, ab, d = self.hw.array.rows, self.hw.acc_bytes, self.op.head_dim
        for c0, kc in self.d_chunks:
            c_row = self.dq_row + c0 // r * self.dp_row
            self.em.emit(Op.STORE_ADD, TAG_OUT, reads=(self.part("C", 0, ("dq", c0)),), slot=0,
                         c_row=c_row, addr=self.lay.dq + ((self.base * self.n_cols + q0) * d
                                                          + c0) * ab,
                         stride=d * ab, rows=rows, cols=kc)

    def transposed_gemm(self, base: int, q: int, rr: int, operand: Resource, b_row: int,
                        c_row: int) -> None:
        """``[d, keys] += Xᵀ[d, rr] · operand[rr, keys]`` into accumulator slot 1 from
        ``c_row`` (dVᵀ with dOᵀ and P, dKᵀ with Qᵀ and dS); Xᵀ rows stream from DRAM."""
        em, db, d = self.em, self.hw.data_bytes, self.op.head_dim
        a = em.buffers["A"].claim()
        em.emit(Op.LOAD_A, TAG_V, writes=(em.slot("A", a),), slot=a,
                addr=base + (self.base * d * self.n_cols + q) * db, stride=self.n_cols * db,
                rows=d, cols=rr)
        em.emit(Op.COMPUTE, TAG_V, reads=(em.slot("A", a), operand),
                writes=(self.part("C", 1, c_row),), slot=a, b_slot=1, b_row=b_row, c_slot=1,
                c_row=c_row, accumulate=self.dvdk_open, rows=d, cols=self.item.cols, k=rr, m=d)

    def finish(self) -> None:
        """dVᵀ and dKᵀ of the item's keys to DRAM, at accumulator width."""
        d, kv, ab, it = self.op.head_dim, self.op.kv_len, self.hw.acc_bytes, self.item
        for base, c_row in ((self.lay.dvt, 0), (self.lay.dkt, d)):
            self.em.emit(Op.STORE_C, TAG_OUT, reads=(self.part("C", 1, c_row),), slot=1,
                         c_row=c_row, addr=base + (self.base * d * kv + it.key0) * ab,
                         stride=kv * ab, rows=d, cols=it.cols)


def backward_program(plan: AttentionPlan, item: BackwardItem, visits: tuple[Visit, ...],
                     first: bool, last: bool, lay: BackwardLayout, mask_addr: int,
                     hw: HardwareSpec) -> Program:
    """The program of ``visits`` (all of an item's, or one chunk): the resident tiles, the
    visits, and (``last``) the dKᵀ/dVᵀ stores; ``first`` starts their accumulation."""
    w = _BackwardWriter(plan, item, lay, mask_addr, hw)
    w.dvdk_open = not first
    w.em.buffers["B"].place(1)
    w.em.buffers["C"].place(1)
    w.load_resident()
    for v in visits:
        w.visit(v)
    if last:
        w.finish()
    program = w.em.program
    program.tensors = dict(lay.tensors)
    return program


def _chunks(item: BackwardItem, op, hw: HardwareSpec) -> list[tuple[Visit, ...]]:
    """An item's visits cut so each chunk's program fits every instruction memory (the
    resident loads and final stores reserved in each): DMA, PE and vector instructions per
    visit of ``s`` sub-tiles of ``array.rows`` query rows and ``c`` channel chunks."""
    c, r = ceil_div(op.head_dim, hw.array.rows), hw.array.rows
    subs = np.array([ceil_div(v.block.rows, r) for v in item.visits], dtype=np.int64)
    partial = np.array([v.block.partial for v in item.visits], dtype=np.int64)
    needs = np.stack([partial + 2 + 3 * c + 2 * subs, 2 * c + subs * (2 + c), 2 * subs],
                     axis=1).reshape(-1, 3)
    bounds = chunk_bounds(needs, hw.controller.instruction_depth, (3 * c + 2, 0, 0),
                          f"{op.name}: backward visit")
    return [item.visits[lo:hi] for lo, hi in bounds]


# --------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------


def _work(layer: str, plan: AttentionPlan, blocks: int, partial: int, skipped: int,
          dense: int) -> AttentionWork:
    return AttentionWork(layer, plan.op, plan.mask.label, blocks, partial, skipped, dense,
                         plan.mask.density, plan.mask.block_density, backward=True)


def d_prepass_segments(layer: str, plan: AttentionPlan, hw: HardwareSpec, lay: BackwardLayout,
                       programs: dict) -> list[Segment[AttentionWork]]:
    """``D = rowsum(dO ∘ O)`` per query, over the forward's query columns: dOᵀ and Oᵀ chunks,
    DSCORE's D form, a STATS store (FA2's preprocessing pass)."""
    op, counts = plan.op, {}
    for item in plan.items:
        key = ("attention-bwd-D", op.head_dim, item.cols)
        if key not in programs:
            programs[key] = _d_program(plan, item, lay, hw)
        counts[key] = counts.get(key, 0) + 1
    work = _work(layer, plan, 0, 0, 0, 0)
    return [Segment(work, n * op.repeat, key, programs[key]) for key, n in counts.items()]


def _d_program(plan: AttentionPlan, item, lay: BackwardLayout, hw: HardwareSpec) -> Program:
    op, em, db = plan.op, Emitter(), hw.data_bytes
    n_cols = op.heads // op.groups * op.queries
    base = item.batch * op.groups + item.group
    regs = Resource()
    for c0 in range(0, op.head_dim, hw.array.rows):
        kc = min(hw.array.rows, op.head_dim - c0)
        offset = ((base * op.head_dim + c0) * n_cols + item.col0) * db
        a, b = em.buffers["A"].claim(), em.buffers["B"].claim()
        em.emit(Op.LOAD_A, TAG_SOFTMAX, writes=(em.slot("A", a),), slot=a,
                addr=lay.do_t + offset, stride=n_cols * db, rows=kc, cols=item.cols)
        em.emit(Op.LOAD_B, TAG_SOFTMAX, writes=(em.slot("B", b),), slot=b,
                addr=lay.o_t + offset, stride=n_cols * db, rows=kc, cols=item.cols)
        em.emit(Op.DSCORE, TAG_SOFTMAX, reads=(em.slot("A", a), em.slot("B", b)),
                writes=(regs,), slot=a, b_slot=b, accumulate=True, rows=kc, cols=item.cols)
    em.emit(Op.STATS, TAG_SOFTMAX, reads=(regs,), accumulate=True, rows=1, cols=item.cols,
            addr=lay.d + (base * n_cols + item.col0) * hw.acc_bytes)
    em.program.tensors = dict(lay.tensors)
    return em.program


def backward_segments(layer: str, plan: AttentionPlan, hw: HardwareSpec,
                      programs: dict) -> list[Segment[AttentionWork]]:
    """The backward of one prefill op: the D pass, then one segment per distinct program of
    the backward items (``repeat`` counts them, times the op's repeat)."""
    op, q_blocks = plan.op, ceil_div(plan.op.queries, plan.op.block_size)
    g = op.heads // op.groups
    items = backward_items(plan, hw)
    partial_bytes = [sum(mask_bytes(v.block.rows, it.cols) for v in it.visits if v.block.partial)
                     for it in items]
    lay = BackwardLayout.of(plan, hw, sum(partial_bytes))
    groups: dict[tuple, list] = {}
    offset = 0
    for item, nbytes in zip(items, partial_bytes):
        mask_addr = lay.masks + offset
        offset += nbytes
        chunks = _chunks(item, op, hw)
        visited = sum(v.block.count for v in item.visits)
        for i, visits in enumerate(chunks):
            first, last = i == 0, i == len(chunks) - 1
            key = ("attention-bwd", op.head_dim, op.block_size, op.kv_len, op.queries, g,
                   item.cols, first, last, visited if first else 0,
                   tuple((v.block.rows, v.block.partial, v.block.count) for v in visits))
            if key not in groups:
                if key not in programs:
                    programs[key] = backward_program(plan, item, visits, first, last, lay,
                                                     mask_addr, hw)
                blocks = sum(v.block.count for v in visits)
                groups[key] = [_work(layer, plan, blocks, sum(v.block.partial for v in visits),
                                     g * q_blocks - visited if first else 0,
                                     5 * g * op.queries * item.cols * op.head_dim if first else 0),
                               0]
            groups[key][1] += 1
            mask_addr += sum(mask_bytes(v.block.rows, item.cols) for v in visits
                             if v.block.partial)
    segments = d_prepass_segments(layer, plan, hw, lay, programs)
    return segments + [Segment(work, n * op.repeat, key, programs[key])
                       for key, (work, n) in groups.items()]


def backward_macs(plan: AttentionPlan) -> int:
    """What the backward must execute: five GEMMs of ``query rows × key rows × d`` per
    non-empty (head, query block, key block) cell of the mask (block sizes a multiple of the
    array's columns, so that no item straddles two key blocks)."""
    op, mask = plan.op, plan.mask
    q_rows = np.minimum(op.block_size, op.queries - np.arange(mask.state.shape[2]) * op.block_size)
    k_rows = np.minimum(op.block_size, op.kv_len - np.arange(mask.state.shape[3]) * op.block_size)
    cells = (mask.state != EMPTY).astype(np.int64)
    return int(5 * op.head_dim * np.einsum("bhqk,q,k->", cells, q_rows, k_rows)) * op.repeat
