"""Random tile programs for verification: one seed, one program, replayable.

Each :class:`Case` is a program the real scheduler emitted (``build_segment`` for GEMMs,
``pregen_program`` for weight pre-generation) for a random GEMM shape, so what verification runs
is exactly what archsim simulates. Shapes are small (a simulation cycle costs Python time) but
chosen to hit ragged edge tiles in every dimension, several reduction steps (accumulation), both
loop orders, single and double buffering, and the N:M patterns of the hardware.

Kinds of case:

``dense``
    A dense GEMM (inference or FF with no sparsity).
``nm_ff``
    An N:M GEMM: FF of a layer pruned along ``in`` (``B = Wᵀ``, ``k`` = ``in``), or half the
    time BP of a layer pruned along ``out``; weights loaded compressed (pre-generated) or loaded
    dense and compressed on chip (``COMPRESS``).
``bdwp_bp``
    BP of a BDWP layer: ``B = W`` pruned along ``k`` = ``out`` with the second (BP) mask.
``wg``
    The dense weight-gradient GEMM ``dW = dYᵀ·X``.
``bp_wg``
    BP and WG of one layer interleaved in one program (two accumulator slots in flight).
``pregen``
    Pre-generation: dense weight tiles loaded, compressed on the vector unit, stored compressed
    (``STORE_B``).
``attention`` (:data:`ATTENTION`)
    One work item of a small attention op (``dataflows.attention``): QKᵀ, the online softmax
    (ops 7-11) and PV, with a random mask pattern (dense, sliding window, block-sparse, top-k,
    N:M scores), GQA, prefill or decode, causal or not. Drawn **only when named**
    (``kinds=("attention",)``): it is not in :data:`KINDS`, so the default mixed draw and the
    draws of the GEMM kinds stay what they were for every seed CI replays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from dataflows.attention import (
    AttentionPlan,
    Block,
    WorkItem,
    item_chunks,
    item_program,
    plan_attention,
)
from dataflows.isa import Unit
from dataflows.program import Program
from dataflows.scheduler import build_segment, pregen_program, tiling_for
from dataflows.tiling import Tiling, accumulator_slot_rows, input_row_bytes
from verification.errors import VerificationError
from workloads.arith import ceil_div
from workloads.errors import MappingError
from workloads.layer import ConvShape
from workloads.layers import expand
from workloads.lowering import GemmTask, lower_layer
from workloads.spec import AttentionOp, HardwareSpec, SchedulePasses, WorkloadSpec

__all__ = [
    "KINDS",
    "ATTENTION",
    "ATTENTION_PATTERNS",
    "LONG_CONTEXT_PATTERNS",
    "LONG_CONTEXT_SEEDS",
    "GROUPED",
    "CONV",
    "AttentionCase",
    "Case",
    "random_case",
    "make_case",
    "attention_case",
    "case_spec",
    "case_from_spec",
]

#: Kinds of random case and their relative frequency in a mixed run.
KINDS: dict[str, float] = {
    "dense": 0.2,
    "nm_ff": 0.25,
    "bdwp_bp": 0.2,
    "wg": 0.1,
    "bp_wg": 0.1,
    "pregen": 0.15,
}

#: N:M patterns drawn for sparse cases; those the hardware lacks run dense (masked weights).
_PATTERNS = ((1, 2), (2, 4), (1, 4), (2, 8), (4, 8), (1, 8))

_MAX_M_ROWS = 20  # activation rows: enough for several M tiles once tm is small

#: The attention kind. Not a key of :data:`KINDS`: adding it there would change the weighted
#: draw, hence the program, of every seed; it is drawn only when a caller names it.
ATTENTION = "attention"

#: Its weight when named together with GEMM kinds.
_ATTENTION_WEIGHT = 0.2

#: The grouped-convolution kind: one GEMM (FF, BP or WG) of a random grouped or depthwise
#: convolution, lowered as ``archsim run`` lowers it (groups packed into block-diagonal GEMM
#: copies). Like :data:`ATTENTION`, drawn only when named, so the default draws stay as they were.
GROUPED = "grouped"

#: The convolution-addressing kind: the forward GEMM of a random ungrouped convolution whose A
#: rows the PE array reads from a feature-map patch through COMPUTE's convolution address mode
#: (kernels 2×2 to 5×5, stride 1 or 2, zero padding; dense or N:M, FF or, for odd seeds of
#: stride-1 N:M draws, the BP of a transposed convolution with BDWP's BP mask; for seeds
#: 5 mod 6 the weight gradient, whose B rows come through the mode on weight rows — or, for
#: seeds 11 mod 12, with a short C_out, swapped with its A from the transposing read; for seeds
#: 3 mod 7 a convolution with fewer channels than its N:M reduction tile, several kernel
#: offsets per COMPUTE, FF or BP). Named-only.
CONV = "conv"

#: Named-only kinds and their weight when named together with others.
_NAMED_ONLY = {ATTENTION: _ATTENTION_WEIGHT, GROUPED: 0.2, CONV: 0.2}

#: Mask patterns an attention case draws from (``nm`` only with a pattern the array runs).
ATTENTION_PATTERNS = ("dense", "sliding_window", "block_sparse", "topk", "nm")

#: Issue 18's patterns (element masks from files are read, then masks like any other). Drawn
#: from seed LONG_CONTEXT_SEEDS on, so that the programs of earlier seeds (the CI samples, the
#: documented on-demand runs) stay what they were.
LONG_CONTEXT_PATTERNS = ("vertical_slash", "diagonal", "multi_diagonal", "vertical_stripe",
                         "gated_block")
LONG_CONTEXT_SEEDS = 1000


@dataclass(frozen=True, slots=True)
class AttentionCase:
    """The attention op of a case and the one work item its program computes, whole.

    Attributes
    ----------
    plan
        ``dataflows.attention.plan_attention(op, hw)``: the op, its mask, items and layout.
    item
        Index of the work item in ``plan.items``.
    steps
        The item's steps (``item_chunks``; one chunk): the blocks the program visits.
    """

    plan: AttentionPlan
    item: int
    steps: tuple[Block, ...]

    @property
    def op(self) -> AttentionOp:
        return self.plan.op

    @property
    def work(self) -> WorkItem:
        return self.plan.items[self.item]


@dataclass(frozen=True, slots=True)
class Case:
    """One verification program and everything needed to rebuild its operands.

    Attributes
    ----------
    seed
        The seed that regenerates this case exactly (``random_case(hw, seed)``).
    kind
        One of :data:`KINDS`, or :data:`ATTENTION`.
    segment
        ``"gemm"``, ``"pregen"`` or ``"attention"``: how the tensors of ``program`` are to be
        read.
    tasks, tilings
        The GEMM tasks and their tilings, in tag order (``program.tags`` index ``tasks``);
        empty for attention.
    passes
        The scheduler passes the program was built with.
    attention
        The op and work item of an attention case; None for the GEMM kinds.
    """

    seed: int
    kind: str
    hw: HardwareSpec
    program: Program
    tasks: tuple[GemmTask, ...]
    tilings: tuple[Tiling, ...]
    segment: str
    passes: SchedulePasses
    attention: AttentionCase | None = None

    @property
    def description(self) -> str:
        """A one-line summary: kind, shapes, sparsity, tiling and passes."""
        if self.attention is not None:
            return self._attention_description()
        parts = []
        for task, t in zip(self.tasks, self.tilings):
            nm = f" {task.nm[0]}:{task.nm[1]}" if task.nm else ""
            mode = ("sparse, compressed in DRAM" if t.compressed_in_dram else
                    "sparse, compressed on chip") if t.sparse else "dense"
            copies = f" x{task.copies}" if task.copies > 1 else ""
            parts.append(f"{task.phase} m={task.m} k={task.k} n={task.n}{copies}{nm} ({mode}, "
                         f"tm={t.tm} {t.order}{' swap' if t.swap else ''})")
        buffering = "double" if self.passes.double_buffering else "single"
        return (f"seed {self.seed} {self.kind}: {'; '.join(parts)}; {buffering} buffering; "
                f"{len(self.program.instrs)} instructions")

    def _attention_description(self) -> str:
        att = self.attention
        op, item, mask = att.op, att.work, att.plan.mask
        heads = f"{op.heads} heads" + (f"/{op.groups} kv" if op.groups != op.heads else "")
        masked = sum(b.partial for b in att.steps)
        causal = " causal" if op.causal and "causal" not in mask.label else ""
        return (f"seed {self.seed} attention: {mask.label}{causal}, "
                f"{op.phase} {heads} q_len={op.queries} kv_len={op.kv_len} d={op.head_dim} "
                f"block={op.block_size}; item {att.item}/{len(att.plan.items)} (kv head "
                f"{item.group}, cols {item.col0}..{item.col0 + item.cols - 1}), "
                f"{len(att.steps)} steps ({masked} masked); {len(self.program.instrs)} "
                f"instructions")


def _pattern(rng: np.random.Generator, hw: HardwareSpec) -> tuple[int, int]:
    supported = [(p.n, p.m) for p in hw.nm_patterns]
    # Mostly the hardware's own patterns (the point of the test), sometimes one it lacks.
    if supported and rng.random() < 0.85:
        return supported[rng.integers(len(supported))]
    return _PATTERNS[rng.integers(len(_PATTERNS))]


def _extent(rng: np.random.Generator, tile: int, unit: int = 1) -> int:
    """A dimension of 1 to about 2.5 tiles, a multiple of ``unit``; ragged edges are common."""
    top = max(1, (5 * tile // 2) // unit)
    return unit * int(rng.integers(1, top + 1))


def _reduction_tile(hw: HardwareSpec, nm: tuple[int, int] | None) -> int:
    if nm is not None and hw.supports(*nm):
        return hw.array.rows // nm[0] * nm[1]
    return hw.array.rows


def _tasks(kind: str, rng: np.random.Generator, hw: HardwareSpec) -> tuple[GemmTask, ...]:
    rows, cols = hw.array.rows, hw.array.cols
    m = int(rng.integers(1, _MAX_M_ROWS + 1))
    # Pre-generation compresses one weight copy; copies are for GEMMs (attention heads).
    copies = 2 if kind != "pregen" and rng.random() < 0.15 else 1
    if kind == "dense":
        k, n = _extent(rng, rows), _extent(rng, cols)
        return (GemmTask("gemm", "gemm", "inference", m, k, n, copies=copies),)
    nm = _pattern(rng, hw)
    # A BDWP layer W[out, in] keeps N of M along both dims, so both are multiples of M.
    f_in = _extent(rng, _reduction_tile(hw, nm), nm[1])
    f_out = _extent(rng, _reduction_tile(hw, nm), nm[1])
    if kind in ("nm_ff", "pregen") and rng.random() < 0.5:
        return (GemmTask("fc", "fc", "ff", m, f_in, f_out, nm, "fc.W.ff", copies=copies),)
    bp = GemmTask("fc.bp", "fc", "bp", m, f_out, f_in, nm, "fc.W.bp", copies=copies)
    wg = GemmTask("fc.wg", "fc", "wg", f_out, m, f_in, copies=copies)
    if kind in ("bdwp_bp", "nm_ff", "pregen"):
        return (bp,)
    if kind == "wg":
        return (wg,)
    if kind == "bp_wg":
        return (bp, wg)
    raise VerificationError(f"unknown case kind {kind!r}; expected one of {', '.join(KINDS)}")


def _grouped_tasks(rng: np.random.Generator, hw: HardwareSpec) -> tuple[GemmTask, ...]:
    """One GEMM of a random grouped (or depthwise) 3×3 convolution, as the workload lowers it."""
    groups = int(rng.choice([2, 3, 4, 6]))
    c_in = groups * int(rng.integers(1, 4))
    c_out = c_in if rng.random() < 0.4 else groups * int(rng.integers(1, 4))  # 0.4: depthwise-like
    conv = {"op": "conv2d", "name": "gconv", "in_channels": c_in, "out_channels": c_out,
            "kernel": 3, "padding": 1, "input_size": int(rng.integers(3, 6)), "batch": 1,
            "groups": groups}
    workload = WorkloadSpec.model_validate({"version": 1, "name": "grouped", "hardware": hw,
                                            "mode": "training", "operations": [conv]})
    (layer,) = expand(workload)
    tasks = lower_layer(layer, "training")
    return (tasks[int(rng.integers(len(tasks)))],)


def _conv_tasks(rng: np.random.Generator, hw: HardwareSpec) -> tuple[GemmTask, ...]:
    """The forward GEMM of a small random convolution whose channels fill whole array tiles,
    its input lines short enough that a patch of ``kernel`` lines fits an input slot."""
    nm = _pattern(rng, hw) if rng.random() < 0.5 else None
    tk = _reduction_tile(hw, nm)
    kernel = int(rng.choice([2, 3, 3, 3, 5]))
    stride = int(rng.choice([1, 1, 2]))
    padding = int(rng.integers(0, kernel // 2 + 1))
    slot_rows = hw.buffers.input_bytes // 2 // input_row_bytes(tk, hw)
    widest = max(1, min(8, slot_rows // kernel))
    low = max(1, kernel - 2 * padding)
    h, w = (int(rng.integers(low, max(low, widest) + 1)) for _ in range(2))
    conv = ConvShape(int(rng.integers(1, 3)), h, w, tk * (2 if rng.random() < 0.3 else 1),
                     kernel, kernel, stride, padding)
    n = _extent(rng, hw.array.cols, nm[1] if nm else 1)
    rows, k = conv.batch * conv.out_h * conv.out_w, conv.channels * kernel * kernel
    if nm is None:
        return (GemmTask("conv", "conv", "inference", rows, k, n, conv=conv),)
    return (GemmTask("conv", "conv", "ff", rows, k, n, nm, "conv.W.ff", conv=conv),)


def _offsets_tasks(rng: np.random.Generator, hw: HardwareSpec) -> tuple[GemmTask, ...]:
    """The forward (or, odd draws, BP) GEMM of a small random convolution with fewer channels
    than its N:M reduction tile: several kernel offsets per COMPUTE (redrawn by the caller
    where the line width puts two offsets of a COMPUTE in one bank group)."""
    wide = [(p.n, p.m) for p in hw.nm_patterns if p.m > p.n]
    if not wide:
        raise MappingError(f"{hw.name!r} has no N:M pattern for several offsets per COMPUTE")
    nm = wide[int(rng.integers(len(wide)))]
    tk, rows = _reduction_tile(hw, nm), hw.array.rows
    channels = rows << int(rng.integers(0, max(1, (tk // rows).bit_length() - 1)))
    kernel, stride = int(rng.choice([2, 3, 3, 5])), int(rng.choice([1, 1, 2]))
    padding = int(rng.integers(0, kernel // 2 + 1))
    low = max(1, kernel - 2 * padding)
    h, w = (int(rng.integers(low, low + 6)) for _ in range(2))
    conv = ConvShape(int(rng.integers(1, 3)), h, w, channels, kernel, kernel, stride, padding)
    k = channels * kernel * kernel
    if channels >= tk or k % nm[1]:
        raise MappingError(f"{conv} does not take several offsets per COMPUTE under {nm}")
    n = _extent(rng, hw.array.cols, nm[1])
    phase = "bp" if stride == 1 and rng.random() < 0.5 else "ff"
    return (GemmTask("conv", "conv", phase, conv.batch * conv.out_h * conv.out_w, k, n, nm,
                     f"conv.W.{phase}", conv=conv),)


def _conv_case(hw: HardwareSpec, seed: int, rng: np.random.Generator) -> Case:
    """A :data:`CONV` case: redrawn until the search maps it with the address mode. Seeds
    3 mod 7 draw several kernel offsets per COMPUTE; the other seeds draw as they always did."""
    task, = _offsets_tasks(rng, hw) if seed % 7 == 3 else _conv_variant(hw, seed, rng)
    passes = SchedulePasses(double_buffering=bool(rng.random() < 0.75), offline_tiling=True)
    try:
        case = make_case(hw, seed, CONV, (task,), passes, True)
    except VerificationError as exc:  # too many instructions for the controller: redraw
        raise MappingError(str(exc)) from None
    if not (case.tilings[0].conv or case.tilings[0].conv_b or case.tilings[0].conv_t):
        raise MappingError(f"{task.conv} is mapped through im2col on {hw.name!r}")
    return case


def _conv_variant(hw: HardwareSpec, seed: int, rng: np.random.Generator) -> tuple[GemmTask]:
    """A :func:`_conv_tasks` draw, as its FF, its BP or its weight gradient (by the seed)."""
    task, = _conv_tasks(rng, hw)
    conv = task.conv
    if seed % 6 == 5:
        # The weight gradient of the same convolution: B is X's im2col matrix, preloaded
        # through the address mode on weight rows (dense). Chosen by the seed, as below.
        # Seeds 11 mod 12 keep C_out short instead where an accumulator slot holds a channel
        # chunk's kh·kw·rows rows: the GEMM runs swapped, its A generated by the transposing
        # read (Tiling.conv_t).
        long = 3 * (hw.array.rows + hw.array.cols + 1)  # long enough to stream
        chunk = conv.kh * conv.kw * hw.array.rows
        short = seed % 12 == 11 and chunk <= accumulator_slot_rows(hw)
        c_out = task.n + (0 if short else long)
        task = GemmTask("conv.wg", "conv", "wg", c_out, task.m, task.k,
                        im2col_elems=conv.batch * conv.in_h * conv.in_w * conv.channels,
                        conv=conv)
    elif task.nm and task.conv.stride == 1 and seed % 2:
        # A BP lowered as the transposed convolution (workloads.lowering): the same program,
        # with BDWP's second mask along k. Chosen by the seed, so the draws stay as they were.
        task = replace(task, phase="bp", weight="conv.W.bp")
    return (task,)


def _passes(kind: str, rng: np.random.Generator) -> SchedulePasses:
    # Interleaving two GEMMs needs a second accumulator slot, i.e. double buffering.
    double = kind == "bp_wg" or rng.random() < 0.75
    return SchedulePasses(double_buffering=double, offline_tiling=bool(rng.random() < 0.5))


def make_case(hw: HardwareSpec, seed: int, kind: str, tasks: tuple[GemmTask, ...],
              passes: SchedulePasses, compressed_in_dram: bool = True) -> Case:
    """The case for given tasks: a GEMM segment, or a pre-generation program for ``pregen``.

    Raises
    ------
    VerificationError
        If a unit's share of the program exceeds the controller's instruction memory.
    MappingError
        If the scheduler cannot map the tasks onto ``hw``.
    """
    if kind == "pregen":
        tilings = tuple(tiling_for(t, hw, passes, True) for t in tasks)
        if not all(t.sparse for t in tilings):
            raise MappingError(f"pre-generation needs a pattern {hw.name!r} supports")
        program = pregen_program(tasks, tilings, hw, passes.double_buffering)
        segment = "pregen"
    else:
        built = build_segment(tasks, hw, passes, compressed_in_dram)
        program, tilings, segment = built.program, built.work.tilings, "gemm"
    _check_depth(seed, program, hw)
    return Case(seed, kind, hw, program, tasks, tilings, segment, passes)


def _check_depth(seed: int, program: Program, hw: HardwareSpec) -> None:
    depth = hw.controller.instruction_depth
    for unit, queue in program.per_unit().items():
        if len(queue) > depth:
            raise VerificationError(
                f"seed {seed}: {len(queue)} {Unit(unit).name} instructions exceed "
                f"controller.instruction_depth={depth}; use smaller shapes or a deeper controller"
            )


def _attention_pattern(kind: str, rng: np.random.Generator, hw: HardwareSpec, heads: int,
                       kv_len: int, head_dim: int, block: int, seed: int) -> dict:
    if kind == "sliding_window":
        spans = [int(rng.integers(4, kv_len + 1)) for _ in range(heads)]
        window = spans if heads > 1 and rng.random() < 0.3 else spans[0]  # MoA: one per head
        return {"kind": kind, "window": window, "global_tokens": int(rng.integers(0, 4))}
    if kind == "block_sparse":
        return {"kind": kind, "density": round(float(rng.uniform(0.2, 0.8)), 2),
                "seed": int(rng.integers(1000))}
    if kind == "topk":
        # The case's Q and K come from synthetic_qk with the case seed: the same tensors.
        return {"kind": kind, "tokens": int(rng.integers(4, kv_len // 2 + 1)),
                "channels": int(rng.integers(1, min(8, head_dim) + 1)), "data": {"seed": seed}}
    if kind in LONG_CONTEXT_PATTERNS:
        return _long_context_pattern(kind, rng, kv_len, seed)
    if kind == "nm":
        # EXP groups keys from each block's start, the float reference from key 0: they
        # agree (and N:M means one thing) only when blocks hold whole groups.
        nm = [(p.n, p.m) for p in hw.nm_patterns if block % p.m == 0]
        n, m = nm[rng.integers(len(nm))]
        return {"kind": kind, "n": n, "m": m}
    return {"kind": "dense"}


def _long_context_pattern(kind: str, rng: np.random.Generator, kv_len: int, seed: int) -> dict:
    if kind == "vertical_slash":
        return {"kind": kind, "vertical": int(rng.integers(1, kv_len // 4 + 1)),
                "slash": int(rng.integers(1, kv_len // 4 + 1)),
                "last_q": int(rng.integers(1, 17)), "data": {"seed": seed}}
    if kind == "gated_block":
        rule = ({"top_k": int(rng.integers(1, 4))} if rng.random() < 0.5
                else {"threshold": round(float(rng.uniform(0.05, 0.5)), 2)})
        return {"kind": kind, **rule, "data": {"seed": seed}}
    if kind == "diagonal":
        return {"kind": kind, "window": int(rng.integers(1, kv_len + 1))}
    frame = int(rng.integers(4, kv_len // 2 + 1))
    if kind == "multi_diagonal":
        frames = int(rng.integers(1, 4)) if rng.random() < 0.5 else None
        return {"kind": kind, "window": int(rng.integers(1, frame + 1)), "frame_tokens": frame,
                "frames": frames}
    stripes = sorted({int(f) for f in rng.integers(0, ceil_div(kv_len, frame), size=2)})
    return {"kind": kind, "frame_tokens": frame, "stripe_frames": stripes,
            "window": int(rng.integers(1, frame + 1))}


def _attention_op(rng: np.random.Generator, hw: HardwareSpec, seed: int) -> AttentionOp:
    """A small attention op: a few heads (GQA a third of the time), ragged key blocks and
    channel chunks, prefill (sometimes chunked) or decode, causal or not, a random pattern."""
    kv_heads = int(rng.integers(1, 3))
    heads = kv_heads * int(rng.choice([1, 1, 2]))
    head_dim = int(rng.integers(2, 2 * hw.array.rows + 1))
    kv_len = int(rng.integers(20, 81))
    block = int(rng.choice([8, 16]))
    phase = "decode" if rng.random() < 0.3 else "prefill"
    q_len = None
    if phase == "decode" and rng.random() < 0.3:
        q_len = 2  # two new tokens (speculative decoding)
    elif phase == "prefill" and rng.random() < 0.3:
        q_len = int(rng.integers(1, kv_len))  # chunked prefill: the last q_len positions
    drawable = ATTENTION_PATTERNS + (LONG_CONTEXT_PATTERNS if seed >= LONG_CONTEXT_SEEDS else ())
    kinds = [k for k in drawable
             if k != "nm" or any(block % p.m == 0 for p in hw.nm_patterns)]
    kind = kinds[rng.integers(len(kinds))]
    pattern = _attention_pattern(kind, rng, hw, heads, kv_len, head_dim, block, seed)
    causal = bool(rng.random() < 0.5) or kind == "vertical_slash"  # MInference is causal
    return AttentionOp.model_validate({
        "op": "attention", "name": "attn", "heads": heads, "kv_heads": kv_heads,
        "q_len": q_len, "kv_len": kv_len, "head_dim": head_dim, "block_size": block,
        "phase": phase, "causal": causal, "pattern": pattern})


def _attention_item(plan: AttentionPlan, hw: HardwareSpec,
                    rng: np.random.Generator) -> tuple[int, tuple[Block, ...]]:
    """A work item whose whole program is one chunk: one with a masked block if any has one
    (masks are what the pattern adds), and among those one with the most steps (up to 3)."""
    fits = []
    for i, item in enumerate(plan.items):
        chunks = item_chunks(plan, item, hw)
        if len(chunks) == 1:
            fits.append((i, chunks[0]))
    if not fits:
        raise MappingError("no work item of the op fits one program")
    masked = [f for f in fits if any(b.partial for b in f[1])]
    pool = masked or fits
    enough = min(3, max(len(steps) for _, steps in pool))
    pool = [f for f in pool if len(f[1]) >= enough]
    return pool[rng.integers(len(pool))]


def attention_case(hw: HardwareSpec, seed: int, rng: np.random.Generator | None = None) -> Case:
    """The random attention case of ``seed``: one work item of a small op, its whole program.

    Ops that do not map onto ``hw`` (a tile larger than a buffer slot) are redrawn; the draws
    depend on ``rng`` (default: seeded by ``seed``) alone, so a seed replays.
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    last: Exception | None = None
    for _ in range(20):
        try:
            plan = plan_attention(_attention_op(rng, hw, seed), hw)
            index, steps = _attention_item(plan, hw, rng)
        except MappingError as exc:
            last = exc
            continue
        program = item_program(plan, plan.items[index], steps, True, True, hw)
        _check_depth(seed, program, hw)
        return Case(seed, ATTENTION, hw, program, (), (), "attention", SchedulePasses(),
                    AttentionCase(plan, index, steps))
    raise VerificationError(f"seed {seed}: no mappable attention op on {hw.name!r}: {last}")


def random_case(hw: HardwareSpec, seed: int, kinds: tuple[str, ...] | None = None) -> Case:
    """The random case of ``seed``: the same seed and hardware always give the same program.

    Parameters
    ----------
    kinds
        Kinds to draw from (weighted by :data:`KINDS`); all of them by default.
        :data:`ATTENTION` is drawn only when named here.
    """
    kinds = tuple(kinds or KINDS)
    for kind in kinds:
        if kind not in KINDS and kind not in _NAMED_ONLY:
            raise VerificationError(f"unknown case kind {kind!r}; expected one of "
                                    f"{', '.join([*KINDS, *_NAMED_ONLY])}")
    weights = np.array([KINDS.get(k) or _NAMED_ONLY[k] for k in kinds])
    rng = np.random.default_rng(seed)
    last: Exception | None = None
    # Redraw shapes the mapping rejects (a pattern the hardware cannot pre-generate, a tile too
    # large for the buffers); the sequence of draws depends on the seed alone, so this replays.
    for _ in range(20):
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        if kind == ATTENTION:
            return attention_case(hw, seed, rng)
        if kind == CONV:
            try:
                return _conv_case(hw, seed, rng)
            except MappingError as exc:
                last = exc
                continue
        if kind == GROUPED:
            tasks, passes = _grouped_tasks(rng, hw), _passes(kind, rng)
            try:
                return make_case(hw, seed, kind, tasks, passes, True)
            except MappingError as exc:
                last = exc
                continue
        if kind == "pregen" and not hw.nm_patterns:
            kind = "nm_ff"
        tasks = _tasks(kind, rng, hw)
        passes = _passes(kind, rng)
        compressed = bool(rng.random() < 0.6)
        try:
            return make_case(hw, seed, kind, tasks, passes, compressed)
        except MappingError as exc:
            last = exc
    raise VerificationError(f"seed {seed}: no mappable random program on {hw.name!r}: {last}")


def case_spec(kind: str, tasks: tuple[GemmTask, ...], passes: SchedulePasses | None = None,
              compressed_in_dram: bool = True, seed: int = 0) -> dict:
    """A JSON-able description of a hand-written case (for plans and regression tests)."""
    passes = passes or SchedulePasses()
    return {"seed": seed, "kind": kind, "tasks": [asdict(t) for t in tasks],
            "passes": passes.model_dump(), "compressed_in_dram": compressed_in_dram}


def case_from_spec(hw: HardwareSpec, spec: dict) -> Case:
    """The case a plan entry names: ``{"seed", "kinds"}`` (random) or a :func:`case_spec`."""
    if "tasks" not in spec:
        kinds = spec.get("kinds")
        return random_case(hw, int(spec["seed"]), tuple(kinds) if kinds else None)
    tasks = tuple(GemmTask(**{**t, "nm": tuple(t["nm"]) if t.get("nm") else None,
                              "conv": ConvShape(**t["conv"]) if t.get("conv") else None})
                  for t in spec["tasks"])
    return make_case(hw, int(spec["seed"]), spec["kind"], tasks,
                     SchedulePasses(**spec["passes"]), bool(spec["compressed_in_dram"]))
