"""The estimation work of data-dependent attention patterns, as tile programs.

A pattern chosen from Q and K at run time (MInference's vertical-slash, SeerAttention's gate,
BLASST, Double Sparsity) first computes scores to decide what to skip. That work is charged here
as what it is on this accelerator — QKᵀ on the PE array, a running max and exponentials on the
vector unit, and the DRAM traffic of its operands and results — in segments of their own whose
instructions carry :data:`~dataflows.attention.TAG_EST`, so the statistics report it apart
(docs/attention.md, "Estimation"). Per :class:`~workloads.generators.attention.Estimate` kind:

* ``last_queries``: per head, the last ``queries`` queries against every key over all channels;
  per key step QKᵀ, ``ROWMAX``, and per ``array.rows`` keys ``EXP`` (the probabilities) copied
  out of the weight slot by a ``COMPUTE`` against an identity tile and written back with
  ``STORE_C`` (the column and diagonal sums and the top-k over them are host work, not charged);
* ``pooled``: Q and K average-pooled per block on the array (a ``COMPUTE`` against a ones tile
  per 32 rows: pooled Qᵀ columns from Qᵀ, pooled K rows from K), written back, then the pooled
  queries against the pooled keys as for ``last_queries``;
* ``skipped``: per work item, QKᵀ and ``ROWMAX`` of every key block the causal flag allows but
  the item skips (BLASST computes them to decide);
* ``label_cache``: per work item, its queries against every key they see over ``channels``
  channels of a label cache (Q and K restricted to those channels, stored apart), then
  ``ROWMAX`` as the selection pass.

Estimate segments reuse the attention segments' grouping: programs that differ only in DRAM
addresses are built once and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataflows.attention import (
    O_SLOT,
    S_SLOT,
    TAG_EST,
    AttentionPlan,
    AttentionWork,
    Block,
    attention_segments,
    item_pairs,
    max_step_rows,
    merge_steps,
    plan_attention,
)
from dataflows.attention_backward import backward_segments, lse_address
from dataflows.isa import Op
from dataflows.program import Allocator, Emitter, Program, Segment
from dataflows.softmax_format import SoftmaxFormat
from workloads.arith import ceil_div
from workloads.errors import MappingError
from workloads.generators.attention import EMPTY, Estimate, causal_block_states
from workloads.spec import HardwareSpec

__all__ = ["ScoreItem", "estimate_items", "estimate_segments", "score_program",
           "attention_layer_segments"]


@dataclass(frozen=True, slots=True)
class ScoreItem:
    """``cols`` query columns scored against key ``steps`` over ``channels`` channels.

    Qᵀ columns start at ``q_addr`` (rows ``q_stride`` bytes apart, one per channel); key rows
    start at ``k_addr`` (``k_stride`` bytes apart). ``softmax``: exponentials are computed and
    written to ``out_addr`` (``out_stride`` bytes per key row). ``pool``: a pooling item instead
    (``"q"`` or ``"k"``, see :func:`_pool_program`).
    """

    cols: int
    channels: int
    steps: tuple[Block, ...]
    q_addr: int
    q_stride: int
    k_addr: int
    k_stride: int
    softmax: bool
    out_addr: int = 0
    out_stride: int = 0
    pool: str = ""


class _EstimateLayout:
    """DRAM of the estimate's own tensors, placed after the attention op's."""

    def __init__(self, plan: AttentionPlan, hw: HardwareSpec) -> None:
        self.dram = Allocator()
        self.dram.tensors.update(plan.layout.tensors)
        self.dram.end = max(t.addr + t.nbytes for t in plan.layout.tensors.values())
        self.db, self.name = hw.data_bytes, plan.op.name
        r = hw.array.rows
        self.identity = self.dram.alloc(f"{self.name}.est.I", r, r, self.db).addr
        self.ones = self.dram.alloc(f"{self.name}.est.ones", r, r, self.db).addr

    def alloc(self, what: str, rows: int, cols: int) -> int:
        return self.dram.alloc(f"{self.name}.est.{what}", rows, cols, self.db).addr


def _key_steps(blocks, plan: AttentionPlan, hw: HardwareSpec, kv_len: int) -> tuple[Block, ...]:
    """Key blocks (indices, of ``plan.op.block_size`` keys out of ``kv_len``) as merged steps."""
    size = plan.op.block_size
    steps = tuple(Block(int(j), min(size, kv_len - int(j) * size), False) for j in blocks)
    return merge_steps(steps, max_step_rows(plan.op, hw), size)


def _last_query_items(plan: AttentionPlan, hw: HardwareSpec, lay: _EstimateLayout,
                      est: Estimate) -> list[ScoreItem]:
    op, db, width = plan.op, hw.data_bytes, hw.array.cols
    g, d, q_len = op.heads // op.groups, op.head_dim, op.queries
    last = min(est.queries, q_len)
    n_cols = g * q_len
    steps = _key_steps(range(ceil_div(op.kv_len, op.block_size)), plan, hw, op.kv_len)
    out = lay.alloc("P", op.batch * op.heads * op.kv_len, last)
    items = []
    for base in range(op.batch * op.groups):
        for h_in in range(g):
            for c0 in range(q_len - last, q_len, width):
                cols = min(width, q_len - c0)
                q = plan.layout.q + (base * d * n_cols + h_in * q_len + c0) * db
                o = out + ((base * g + h_in) * op.kv_len * last + c0 - (q_len - last)) * db
                items.append(ScoreItem(cols, d, steps, q, n_cols * db,
                                       plan.layout.k + base * op.kv_len * d * db, d * db, True,
                                       o, last * db))
    return items


def _pooled_items(plan: AttentionPlan, hw: HardwareSpec, lay: _EstimateLayout) -> list[ScoreItem]:
    """Pooling items (Q and K) and the gate's score items over pooled Q and K."""
    op, db, width, block = plan.op, hw.data_bytes, hw.array.cols, plan.op.block_size
    g, d, q_len = op.heads // op.groups, op.head_dim, op.queries
    nqb, nkb, n_cols = ceil_div(q_len, block), ceil_div(op.kv_len, block), g * q_len
    pq = lay.alloc("pooled_QT", op.batch * op.groups * d, g * nqb)
    pk = lay.alloc("pooled_K", op.batch * op.groups * nkb, d)
    out = lay.alloc("gate_P", op.batch * op.groups * nkb, g * nqb)
    pool_q = tuple(Block(j, min(block, q_len - j * block), False) for j in range(nqb))
    pool_k = tuple(Block(j, min(block, op.kv_len - j * block), False) for j in range(nkb))
    gate_steps = _key_steps(range(ceil_div(nkb, block)), plan, hw, nkb)
    items = []
    for base in range(op.batch * op.groups):
        q0 = plan.layout.q + base * d * n_cols * db
        k0 = plan.layout.k + base * op.kv_len * d * db
        for h_in in range(g):
            items.append(ScoreItem(1, d, pool_q, q0 + h_in * q_len * db, n_cols * db,
                                   pq + (base * d * g * nqb + h_in * nqb) * db, g * nqb * db,
                                   False, pool="q"))
        items.append(ScoreItem(1, d, pool_k, 0, 0, k0, d * db, False,
                               pk + base * nkb * d * db, d * db, pool="k"))
        for c0 in range(0, g * nqb, width):
            cols = min(width, g * nqb - c0)
            items.append(ScoreItem(cols, d, gate_steps, pq + (base * d * g * nqb + c0) * db,
                                   g * nqb * db, pk + base * nkb * d * db, d * db, True,
                                   out + (base * nkb * g * nqb + c0) * db, g * nqb * db))
    return items


def _item_blocks(plan: AttentionPlan, est: Estimate) -> list[tuple]:
    """Per work item, the key blocks its estimate scores: those its queries may see (causal
    flag), less the visited ones for ``skipped``."""
    op, mask = plan.op, plan.mask
    allowed = mask.fill if mask.fill is not None else None
    out, cache = [], {}
    for item in plan.items:
        pairs = item_pairs(op, mask.block, item.group, item.col0, item.cols)
        key = (id(item.blocks), pairs)  # items of one query block share their Visits
        if key not in cache:
            qbs = [qb for _, qb in pairs]
            base = allowed[qbs] if allowed is not None else _causal_blocks(plan, qbs)
            seen = np.flatnonzero((base != EMPTY).any(axis=0))
            if est.kind == "skipped":
                seen = np.setdiff1d(seen, item.blocks.index)
            cache[key] = tuple(int(j) for j in seen)
        out.append(cache[key])
    return out


def _causal_blocks(plan: AttentionPlan, qbs: list[int]) -> np.ndarray:
    op = plan.op
    return causal_block_states(op.queries, op.kv_len, op.block_size, op.causal)[qbs]


def _per_item_items(plan: AttentionPlan, hw: HardwareSpec, lay: _EstimateLayout,
                    est: Estimate) -> list[ScoreItem]:
    """``skipped`` and ``label_cache``: one score item per work item with blocks to score."""
    op, db = plan.op, hw.data_bytes
    d, n_cols = op.head_dim, op.heads // op.groups * op.queries
    q_base, q_rows, k_base, k_cols = plan.layout.q, d, plan.layout.k, d
    if est.kind == "label_cache":
        q_rows = k_cols = est.channels
        q_base = lay.alloc("label_QT", op.batch * op.groups * q_rows, n_cols)
        k_base = lay.alloc("label_K", op.batch * op.groups * op.kv_len, k_cols)
    items, steps_of = [], {}
    for item, blocks in zip(plan.items, _item_blocks(plan, est)):
        if not blocks:
            continue
        if blocks not in steps_of:
            steps_of[blocks] = _key_steps(blocks, plan, hw, op.kv_len)
        base = item.batch * op.groups + item.group
        items.append(ScoreItem(item.cols, q_rows, steps_of[blocks],
                               q_base + (base * q_rows * n_cols + item.col0) * db, n_cols * db,
                               k_base + base * op.kv_len * k_cols * db, k_cols * db, False))
    return items


def estimate_items(plan: AttentionPlan, hw: HardwareSpec) -> tuple[list[ScoreItem], dict]:
    """The score items of a plan's estimate (none without one) and the DRAM tensors."""
    est = plan.mask.estimate
    if est is None:
        return [], plan.layout.tensors
    lay = _EstimateLayout(plan, hw)
    if est.kind == "last_queries":
        items = _last_query_items(plan, hw, lay, est)
    elif est.kind == "pooled":
        items = _pooled_items(plan, hw, lay)
    elif est.kind in ("skipped", "label_cache"):
        items = _per_item_items(plan, hw, lay, est)
    else:
        raise MappingError(f"{plan.op.name}: unknown estimate kind {est.kind!r}")
    return items, dict(lay.dram.tensors)


# --------------------------------------------------------------------------------------------
# Programs
# --------------------------------------------------------------------------------------------


class _ScoreWriter:
    """Emits one score item's steps (or a chunk of them), every instruction tagged TAG_EST."""

    def __init__(self, item: ScoreItem, hw: HardwareSpec, tensors: dict, block: int) -> None:
        self.item, self.hw, self.db, self.r = item, hw, hw.data_bytes, hw.array.rows
        self.block = block
        self.em = Emitter()
        self.em.program.tensors = tensors
        self.identity = tensors[_tensor_name(tensors, "est.I")].addr
        self.ones = tensors[_tensor_name(tensors, "est.ones")].addr
        self.shift = SoftmaxFormat.of(hw).prob_bits

    def load(self, buffer: str, op: Op, **fields) -> int:
        s = self.em.buffers[buffer].claim()
        self.em.emit(op, TAG_EST, writes=(self.em.slot(buffer, s),), slot=s, **fields)
        return s

    def compute(self, a: int, b: int, acc: int, accumulate: bool, m: int, k: int, cols: int):
        em = self.em
        em.emit(Op.COMPUTE, TAG_EST, reads=(em.slot("A", a), em.slot("B", b)),
                writes=(em.slot("C", acc),), slot=a, b_slot=b, c_slot=acc,
                accumulate=accumulate, rows=m, cols=cols, k=k, m=m, nm_n=0, nm_m=0)

    def store(self, addr: int, stride: int, rows: int, cols: int, shift: int) -> None:
        em = self.em
        em.emit(Op.STORE_C, TAG_EST, reads=(em.slot("C", O_SLOT),), slot=O_SLOT, addr=addr,
                stride=stride, rows=rows, cols=cols, requant=True, shift=shift)

    def score_step(self, step: Block, opening: bool) -> None:
        """QKᵀ of one step into the score slot, its running max, and (softmax) the
        exponentials written out a tile of ``array.rows`` keys at a time."""
        it, r, em = self.item, self.r, self.em
        key0 = step.index * self.block
        for c0 in range(0, it.channels, r):
            kc = min(r, it.channels - c0)
            b = self.load("B", Op.LOAD_B, addr=it.q_addr + c0 * it.q_stride, stride=it.q_stride,
                          rows=kc, cols=it.cols)
            a = self.load("A", Op.LOAD_A, addr=it.k_addr + key0 * it.k_stride + c0 * self.db,
                          stride=it.k_stride, rows=step.rows, cols=kc)
            self.compute(a, b, S_SLOT, c0 > 0, step.rows, kc, it.cols)
        em.emit(Op.ROWMAX, TAG_EST, reads=(em.slot("C", S_SLOT),), c_slot=S_SLOT,
                accumulate=not opening, rows=step.rows, cols=it.cols, mask=False, slot=0)
        if not it.softmax:
            return
        for p0 in range(0, step.rows, r):
            t = min(r, step.rows - p0)
            b = em.buffers["B"].claim()
            em.emit(Op.EXP, TAG_EST, reads=(em.slot("C", S_SLOT),), writes=(em.slot("B", b),),
                    c_slot=S_SLOT, b_slot=b, k=p0, rows=t, cols=it.cols, nm_n=0, nm_m=0,
                    mask=False, slot=0)
            a = self.load("A", Op.LOAD_A, addr=self.identity, stride=r * self.db, rows=t, cols=t)
            self.compute(a, b, O_SLOT, False, t, t, it.cols)
            self.store(it.out_addr + (key0 + p0) * it.out_stride, it.out_stride, t, it.cols,
                       self.shift)

    def pool_step(self, step: Block) -> None:
        """Sum ``step.rows`` rows of Q (``pool == "q"``: Qᵀ columns) or K into one pooled
        column (row) against a ones tile, ``array.rows`` rows at a time, and store it."""
        it, r, db = self.item, self.r, self.db
        row0 = step.index * self.block
        shift = max(step.rows.bit_length() - 1, 0)  # ÷ 2^⌊log2 rows⌋: the average's scale
        if it.pool == "q":
            for c in range(0, step.rows, r):
                t = min(r, step.rows - c)
                a = self.load("A", Op.LOAD_A, addr=it.q_addr + (row0 + c) * db,
                              stride=it.q_stride, rows=it.channels, cols=t)
                b = self.load("B", Op.LOAD_B, addr=self.ones, stride=r * db, rows=t, cols=1)
                self.compute(a, b, O_SLOT, c > 0, it.channels, t, 1)
            self.store(it.out_addr + step.index * db, it.out_stride, it.channels, 1, shift)
            return
        for c0 in range(0, it.channels, r):
            kc = min(r, it.channels - c0)
            for c in range(0, step.rows, r):
                t = min(r, step.rows - c)
                b = self.load("B", Op.LOAD_B, addr=it.k_addr + (row0 + c) * it.k_stride
                              + c0 * db, stride=it.k_stride, rows=t, cols=kc)
                a = self.load("A", Op.LOAD_A, addr=self.ones, stride=r * db, rows=1, cols=t)
                self.compute(a, b, O_SLOT, c > 0, 1, t, kc)
            self.store(it.out_addr + step.index * it.out_stride + c0 * db, it.out_stride, 1, kc,
                       shift)


def _tensor_name(tensors: dict, suffix: str) -> str:
    return next(name for name in tensors if name.endswith(suffix))


def _step_instrs(item: ScoreItem, step: Block, hw: HardwareSpec) -> tuple[int, int, int]:
    """(DMA, PE, vector) instructions one step adds."""
    r = hw.array.rows
    chunks, tiles = ceil_div(item.channels, r), ceil_div(step.rows, r)
    if item.pool == "q":
        return 2 * tiles + 1, tiles, 0
    if item.pool == "k":
        return chunks * (2 * tiles + 1), chunks * tiles, 0
    exp = tiles if item.softmax else 0
    return 2 * chunks + 2 * exp, chunks + exp, 1 + exp


def _chunks(item: ScoreItem, hw: HardwareSpec) -> list[tuple[Block, ...]]:
    """The item's steps cut so each chunk's program fits every instruction memory."""
    depth = hw.controller.instruction_depth
    chunks: list[list[Block]] = [[]]
    used = [0, 0, 0]
    for step in item.steps:
        need = _step_instrs(item, step, hw)
        if any(n > depth for n in need):
            raise MappingError(f"an estimation step of {step.rows} rows needs {need} DMA/PE/"
                               f"vector instructions; controller.instruction_depth={depth} is "
                               f"too small")
        if chunks[-1] and any(u + n > depth for u, n in zip(used, need)):
            chunks.append([])
            used = [0, 0, 0]
        chunks[-1].append(step)
        used = [u + n for u, n in zip(used, need)]
    return [tuple(c) for c in chunks]


def score_program(item: ScoreItem, steps: tuple[Block, ...], first: bool, hw: HardwareSpec,
                  tensors: dict, block: int) -> Program:
    """The program of ``steps`` of one score item (``first``: they open the item); a step's
    rows start at its index times ``block``."""
    writer = _ScoreWriter(item, hw, tensors, block)
    for i, step in enumerate(steps):
        if item.pool:
            writer.pool_step(step)
        else:
            writer.score_step(step, first and i == 0)
    return writer.em.program


def estimate_segments(layer: str, plan: AttentionPlan, hw: HardwareSpec,
                      programs: dict) -> list[Segment[AttentionWork]]:
    """The estimate's segments, one per distinct program (counted), tagged TAG_EST."""
    items, tensors = estimate_items(plan, hw)
    op, groups, cuts = plan.op, {}, {}
    for item in items:
        shape = (item.pool, item.cols, item.channels, item.softmax, item.steps, item.q_stride,
                 item.k_stride, item.out_stride)
        if shape not in cuts:
            cuts[shape] = _chunks(item, hw)
        for i, steps in enumerate(cuts[shape]):
            key = ("estimate", shape[:4] + shape[5:], i == 0,
                   tuple((s.rows, s.count) for s in steps))
            if key not in programs:
                programs[key] = score_program(item, steps, i == 0, hw, tensors, op.block_size)
            groups[key] = groups.get(key, 0) + 1
    work = AttentionWork(layer, op, plan.mask.label, 0, 0, 0, 0, plan.mask.density,
                         plan.mask.block_density, estimate=True)
    return [Segment(work, count * op.repeat, key, programs[key])
            for key, count in groups.items()]


def attention_layer_segments(layer: str, op, hw: HardwareSpec, programs: dict,
                             training: bool = False, backward: bool = False,
                             plans: dict | None = None) -> list[Segment[AttentionWork]]:
    """An attention layer's segments: its estimate's (if its pattern has one), then its own.

    In training the forward also stores its log-sum-exps, and ``backward`` asks for the
    layer's backward (``attention_backward``; reported as the layer ``<layer>.backward``) on
    the plan its forward left in ``plans``.
    """
    plans = {} if plans is None else plans
    if backward:
        return backward_segments(f"{layer}.backward", plans.pop(layer), hw, programs)
    plan = plans[layer] = plan_attention(op, hw)
    lse = lse_address(plan, hw) if training else None
    return estimate_segments(layer, plan, hw, programs) + attention_segments(
        layer, op, hw, programs, plan, lse)
