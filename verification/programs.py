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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dataflows.isa import Program, Unit
from dataflows.lowering import GemmTask
from dataflows.scheduler import build_segment, pregen_program, tiling_for
from dataflows.tiling import Tiling
from verification.errors import VerificationError
from workloads.errors import MappingError
from workloads.spec import HardwareSpec, SchedulePasses

__all__ = ["KINDS", "Case", "random_case", "make_case", "case_spec", "case_from_spec"]

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


@dataclass(frozen=True, slots=True)
class Case:
    """One verification program and everything needed to rebuild its operands.

    Attributes
    ----------
    seed
        The seed that regenerates this case exactly (``random_case(hw, seed)``).
    kind
        One of :data:`KINDS`.
    segment
        ``"gemm"`` or ``"pregen"``: how the tensors of ``program`` are to be read.
    tasks, tilings
        The GEMM tasks and their tilings, in tag order (``program.tags`` index ``tasks``).
    passes
        The scheduler passes the program was built with.
    """

    seed: int
    kind: str
    hw: HardwareSpec
    program: Program
    tasks: tuple[GemmTask, ...]
    tilings: tuple[Tiling, ...]
    segment: str
    passes: SchedulePasses

    @property
    def description(self) -> str:
        """A one-line summary: kind, shapes, sparsity, tiling and passes."""
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
        program, tilings, segment = built.program, built.tilings, "gemm"
    depth = hw.controller.instruction_depth
    for unit, queue in program.per_unit().items():
        if len(queue) > depth:
            raise VerificationError(
                f"seed {seed}: {len(queue)} {Unit(unit).name} instructions exceed "
                f"controller.instruction_depth={depth}; use smaller shapes or a deeper controller"
            )
    return Case(seed, kind, hw, program, tasks, tilings, segment, passes)


def random_case(hw: HardwareSpec, seed: int, kinds: tuple[str, ...] | None = None) -> Case:
    """The random case of ``seed``: the same seed and hardware always give the same program.

    Parameters
    ----------
    kinds
        Kinds to draw from (weighted by :data:`KINDS`); all of them by default.
    """
    kinds = tuple(kinds or KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise VerificationError(f"unknown case kind {kind!r}; expected one of {', '.join(KINDS)}")
    weights = np.array([KINDS[k] for k in kinds])
    rng = np.random.default_rng(seed)
    last: Exception | None = None
    # Redraw shapes the mapping rejects (a pattern the hardware cannot pre-generate, a tile too
    # large for the buffers); the sequence of draws depends on the seed alone, so this replays.
    for _ in range(20):
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
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
    tasks = tuple(GemmTask(**{**t, "nm": tuple(t["nm"]) if t.get("nm") else None})
                  for t in spec["tasks"])
    return make_case(hw, int(spec["seed"]), spec["kind"], tasks,
                     SchedulePasses(**spec["passes"]), bool(spec["compressed_in_dram"]))
