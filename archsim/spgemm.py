"""SpGEMM on the accelerator: each dataflow's program through the one model, and its results.

Each dataflow's mapping (``dataflows.spgemm``) is a list of phases, each a
:class:`~dataflows.spgemm.ChunkTable`; ``dataflows.spgemm_program`` writes them as a tile
program (load a chunk into one of the engine's two scratchpad slots, work it on the engine,
store its output), and the SimPy model (``archsim.model``, the reference) or the fast engine
(``archsim.fast``) executes that program exactly as it executes a GEMM's: the DMA serves the
transfers one at a time in program order, each ``transfer_cycles(bytes)`` long, and the engine
works a chunk's cycles once its load is done (docs/spgemm.md, "The program").

Time is in integer cycles; statistics go into explicit objects; nothing prints. Every dataflow
also runs functionally (:func:`functional_c`): its own order of computation on the real values,
compared with scipy's ``A @ B``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from archsim.model import run_program
from archsim.stats import SegmentStats
from dataflows import spgemm as mapping
from dataflows.isa import SPGEMM_ENGINE_OPS, Unit
from dataflows.program import Program
from dataflows.spgemm import ChunkTable, SpGEMMProblem
from dataflows.spgemm_program import spgemm_program
from workloads.arith import wrap
from workloads.errors import SimulationError
from workloads.spec import HardwareSpec, SpGEMMOp

__all__ = [
    "DataflowResult",
    "SpGEMMOpResult",
    "run_tables",
    "engine_spans",
    "simulate_dataflow",
    "simulate_spgemm",
    "functional_c",
]

#: A timing engine: ``archsim.model.run_program`` or ``archsim.fast.run_program_fast``.
RunProgram = Callable[..., SegmentStats]

_MAPPERS = {
    "inner": mapping.map_inner,
    "outer": mapping.map_outer,
    "gustavson": mapping.map_gustavson,
    "hash": mapping.map_hash,
}


def run_tables(tables: list[ChunkTable], hw: HardwareSpec, run: RunProgram = run_program,
               trace: bool = False) -> tuple[Program, SegmentStats]:
    """Write the phases' program (``dataflows.spgemm_program``) and execute it from an idle
    accelerator with ``run`` (the SimPy model by default, or ``archsim.fast``'s engine: the
    same result). With ``trace``, the statistics keep every instruction's (start, end)."""
    program = spgemm_program(tables)
    return program, run(program, hw, trace=trace)


def engine_spans(program: Program, stats: SegmentStats) -> list[tuple[int, int]]:
    """(start, end) of every engine instruction of a traced run, in order: chunk by chunk,
    phase after phase."""
    return [stats.trace[i] for i, instr in enumerate(program.instrs)
            if instr.op in SPGEMM_ENGINE_OPS]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataflowResult:
    """One dataflow's statistics for one SpGEMM (all phases).

    ``dram_bytes`` splits the DRAM traffic into ``a``, ``b``, ``c`` and ``partial`` (partial
    products and merge intermediates, both directions). ``hash_collisions`` counts probes that
    met another key; ``merge_stall_cycles`` the cycles the multipliers waited for the merger or
    the accumulator. ``unit_busy_cycles`` has ``dma`` and ``engine`` plus the engine's units.
    """

    dataflow: str
    cycles: int
    dram_bytes: dict[str, int]
    dram_read_bytes: int
    dram_write_bytes: int
    multiplies: int
    multiplier_utilization: float
    hash_collisions: int
    merge_stall_cycles: int
    unit_busy_cycles: dict[str, int]
    counters: dict[str, int]
    chunks: int
    functional_check: str  # "passed" or "skipped"
    instructions: int  # of its program (per chunk: SP_LOAD, the engine op, SP_STORE)
    engine_rtl: bool  # its engine exists in RTL, verified cycle-exact against this model

    def as_dict(self) -> dict:
        return {
            "dataflow": self.dataflow,
            "cycles": self.cycles,
            "dram_bytes": dict(self.dram_bytes),
            "dram_read_bytes": self.dram_read_bytes,
            "dram_write_bytes": self.dram_write_bytes,
            "multiplies": self.multiplies,
            "multiplier_utilization": self.multiplier_utilization,
            "hash_collisions": self.hash_collisions,
            "merge_stall_cycles": self.merge_stall_cycles,
            "unit_busy_cycles": dict(self.unit_busy_cycles),
            "counters": dict(self.counters),
            "chunks": self.chunks,
            "functional_check": self.functional_check,
            "instructions": self.instructions,
            "engine_rtl": self.engine_rtl,
        }


@dataclass(frozen=True)
class SpGEMMOpResult:
    """All requested dataflows of one ``op: spgemm``, side by side, with the matrix statistics."""

    name: str
    a: dict
    b: dict | None
    matrix_stats: dict
    dataflows: tuple[DataflowResult, ...]

    @property
    def best(self) -> DataflowResult:
        """The dataflow with the fewest cycles (ties: the first listed)."""
        return min(self.dataflows, key=lambda r: r.cycles)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "a": dict(self.a),
            "b": None if self.b is None else dict(self.b),
            "matrix_stats": dict(self.matrix_stats),
            "winner": self.best.dataflow,
            "cycles": self.best.cycles,
            "dataflows": {r.dataflow: r.as_dict() for r in self.dataflows},
        }


def simulate_dataflow(
    problem: SpGEMMProblem, dataflow: str, functional: bool = False,
    run: RunProgram = run_program,
) -> DataflowResult:
    """Map one dataflow, run its program with ``run`` (default: the SimPy model); with
    ``functional``, also check its C against scipy.

    Raises
    ------
    SimulationError
        If the functional model's C differs from ``A @ B`` (a model bug, never user error).
    """
    hw = problem.hw
    trace = None
    if dataflow == "hash":
        trace = mapping.hash_row_trace(problem, functional=functional)
        tables = mapping.map_hash(problem, trace)
    else:
        tables = _MAPPERS[dataflow](problem)
    program, stats = run_tables(tables, hw, run)
    checked = "skipped"
    if functional:
        _check_c(problem, dataflow, functional_c(problem, dataflow, tables, trace))
        checked = "passed"
    units = {"dma": stats.busy[Unit.DMA], "engine": stats.busy[Unit.PE]}
    counters: dict[str, int] = {}
    for t in tables:
        for k, v in t.units.items():
            units[k] = units.get(k, 0) + v
        for k, v in t.counters.items():
            counters[k] = counters.get(k, 0) + v
    cycles, p = stats.cycles, hw.spgemm.multipliers
    return DataflowResult(
        dataflow=dataflow,
        cycles=cycles,
        dram_bytes=_bytes_by_kind(tables),
        dram_read_bytes=sum(t.dram_read_bytes for t in stats.tasks.values()),
        dram_write_bytes=sum(t.dram_write_bytes for t in stats.tasks.values()),
        multiplies=problem.multiplies,
        multiplier_utilization=problem.multiplies / (cycles * p) if cycles else 0.0,
        hash_collisions=counters.pop("hash_collisions", 0),
        merge_stall_cycles=counters.pop("merge_stall_cycles", 0),
        unit_busy_cycles=units,
        counters=counters,
        chunks=sum(t.n_chunks for t in tables),
        functional_check=checked,
        instructions=len(program.instrs),
        engine_rtl=dataflow in mapping.RTL_DATAFLOWS,
    )


def _bytes_by_kind(tables: list[ChunkTable]) -> dict[str, int]:
    """DRAM bytes of A, B, C and partial products (both directions), over all phases. (The
    program's stores carry only their totals.)"""
    sums = {"a": 0, "b": 0, "c": 0, "partial": 0}
    for t in tables:
        for kind, v in (*t.fetch_bytes.items(), *t.write_bytes.items()):
            sums[kind] += int(v.sum())
        if t.readback_bytes is not None:
            sums["partial"] += int(t.readback_bytes.sum())
    return sums


def simulate_spgemm(op: SpGEMMOp, hw: HardwareSpec, run: RunProgram = run_program) -> SpGEMMOpResult:
    """Simulate every dataflow the op lists on the hardware's SpGEMM engine, each program
    executed by ``run`` (default: the SimPy model)."""
    from workloads.matrices import matrix_stats

    a, b = op.operands()
    problem = SpGEMMProblem(a.matrix, b.matrix, hw)
    stats = matrix_stats(a.matrix, None if op.b is None else b.matrix)
    results = tuple(
        simulate_dataflow(problem, name, functional=op.functional_check, run=run)
        for name in op.dataflows
    )

    def describe(m) -> dict:
        return {"name": m.name, "description": m.description, "synthetic": m.synthetic}

    return SpGEMMOpResult(
        name=op.name,
        a=describe(a),
        b=None if op.b is None else describe(b),
        matrix_stats={f: getattr(stats, f) for f in stats.__slots__},
        dataflows=results,
    )


# --------------------------------------------------------------------------------------------
# Functional execution: each dataflow's own order of computation
# --------------------------------------------------------------------------------------------


def functional_c(
    problem: SpGEMMProblem, dataflow: str, tables: list[ChunkTable],
    trace: mapping.HashTrace | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C as (rows, cols, values) computed the way ``dataflow`` computes it, chunk by chunk.

    - ``inner``: per (row chunk, column block), join A's rows with B's columns on k and sum
      each output's matched products;
    - ``outer``: per k chunk, the outer products as partial rows; then per row chunk, merge
      each row's partial rows (in k order) with the radix-R merge tree;
    - ``gustavson``: per row chunk, scale the selected B rows and merge them with the tree;
    - ``hash``: the hash engine's table contents, pass by pass, in drain order.

    Values wrap to ``acc_bits`` as the datapath does. Output keys must come out unique: a
    dataflow that emitted one (row, col) twice would have failed to merge.
    """
    if dataflow == "hash":
        trace = trace if trace is not None and trace.c_rows is not None else (
            mapping.hash_row_trace(problem, functional=True)
        )
        rows, cols, vals = trace.c_rows, trace.c_cols, trace.c_values
    elif dataflow == "gustavson":
        rows, cols, vals = _gustavson_c(problem, tables[0].row_bounds)
    elif dataflow == "outer":
        rows, cols, vals = _outer_c(problem, tables[1].row_bounds)
    else:
        rows, cols, vals = _inner_c(problem, tables[0])
    return rows, cols, wrap(vals, problem.hw.acc_bits)


def _gustavson_c(problem: SpGEMMProblem, bounds: np.ndarray):
    parts = []
    radix = problem.hw.spgemm.merger_radix
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        prods = problem.product_stream(int(r0), int(r1))
        # The row's lists are its A nonzeros in order: list rank = A nonzero index in the row.
        first_elem = (problem.a.indptr[r0:r1] - problem.a.indptr[r0])[prods.row]
        row, col, val = _merge_tree(prods.row, prods.elem - first_elem, prods.col,
                                    prods.values(problem), radix)
        parts.append((row + r0, col, val))
    return _concat(parts)


def _outer_c(problem: SpGEMMProblem, bounds: np.ndarray):
    # Multiply phase: partial rows (i, k) in k order, as written to DRAM.
    at = problem.a.T.tocsr()  # row k of Aᵀ = column k of A
    k_of = np.repeat(np.arange(at.shape[0], dtype=np.int64), np.diff(at.indptr))
    elem, _, bidx = mapping.expand_b_rows(problem.b, k_of)  # a_ik meets B row k
    i, k = at.indices[elem].astype(np.int64), k_of[elem]
    col = problem.b.indices[bidx].astype(np.int64)
    val = at.data[elem] * problem.b.data[bidx]
    # Merge phase: rows read back in row chunks; a row's lists are its partial rows in k order.
    order = np.lexsort((np.arange(len(i)), k, i))
    i, k, col, val = i[order], k[order], col[order], val[order]
    parts = []
    starts = np.searchsorted(i, bounds)
    for (r0, s0), s1 in zip(zip(bounds[:-1], starts[:-1]), starts[1:]):
        ri, rk = i[s0:s1] - r0, k[s0:s1]
        list_id = _rank_within(ri, rk)
        row, c, v = _merge_tree(ri, list_id, col[s0:s1], val[s0:s1],
                                problem.hw.spgemm.merger_radix)
        parts.append((row + r0, c, v))
    return _concat(parts)


def _inner_c(problem: SpGEMMProblem, table: ChunkTable):
    hw = problem.hw
    a_bytes = problem.a_row_bytes
    col_nnz = np.bincount(problem.b.indices, minlength=problem.n_cols)
    rb = mapping.greedy_chunks(a_bytes, mapping.merge_half_bytes(hw))
    qb = mapping.greedy_chunks(hw.spgemm.index_bytes + col_nnz * mapping.element_bytes(hw),
                               mapping.slot_capacity_bytes(hw))
    if (len(rb) - 1) * (len(qb) - 1) != table.n_chunks:
        raise SimulationError("inner product: functional chunks differ from the mapping's")
    b_csc = problem.b.tocsc()
    parts = []
    for r0, r1 in zip(rb[:-1], rb[1:]):
        a_chunk = problem.a[r0:r1]
        for q0, q1 in zip(qb[:-1], qb[1:]):
            block = b_csc[:, q0:q1].tocsr()  # B's columns of the block, indexed by k
            prods = SpGEMMProblem.unchecked(a_chunk, block, hw).product_stream(0, r1 - r0)
            # Each (i, j) intersection: the matched k's products, summed.
            key = prods.row * (q1 - q0) + prods.col
            keys, sums = _reduce(key, a_chunk.data[prods.aidx] * block.data[prods.bidx])
            parts.append((keys // (q1 - q0) + r0, keys % (q1 - q0) + q0, sums))
    return _concat(parts)


def _merge_tree(row, list_id, col, val, radix):
    """Merge each row's sorted lists ``radix`` at a time, pass after pass, to one list.

    A pass merges lists ``g·radix .. g·radix + radix - 1`` of a row into its list ``g``,
    adding equal columns; the row is done when one list is left.
    """
    if len(row) == 0:
        return row, col, val
    group = list_id.astype(np.int64)
    n_col = int(col.max()) + 1
    while True:
        group = group // radix
        n_grp = int(group.max()) + 1
        keys, val = _reduce((row * n_grp + group) * n_col + col, val)
        col, group, row = keys % n_col, (keys // n_col) % n_grp, keys // n_col // n_grp
        if not group.any():
            return row, col, val


def _reduce(key: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and the sum of the values of each."""
    if len(key) == 0:
        return key, val
    order = np.argsort(key, kind="stable")
    k = key[order]
    starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    return k[starts], np.add.reduceat(val[order], starts)


def _rank_within(row: np.ndarray, k: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... for the distinct k of each row (input sorted by row, then k)."""
    new = np.concatenate([[True], (row[1:] != row[:-1]) | (k[1:] != k[:-1])])
    idx = np.cumsum(new) - 1
    row_start = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
    first_of_row = idx[row_start]
    return idx - np.repeat(first_of_row, np.diff(np.append(row_start, len(row))))


def _concat(parts):
    if not parts:
        return (np.zeros(0, dtype=np.int64),) * 3
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _check_c(problem: SpGEMMProblem, dataflow: str, c: tuple) -> None:
    rows, cols, vals = c
    shape = (problem.n_rows, problem.n_cols)
    keys = rows * shape[1] + cols
    if len(np.unique(keys)) != len(keys):
        raise SimulationError(f"{dataflow}: the functional model emitted a C entry twice")
    got = sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.int64)
    got.eliminate_zeros()
    want = sp.csr_matrix(problem.a @ problem.b, dtype=np.int64)
    want.data = wrap(want.data, problem.hw.acc_bits)
    want.eliminate_zeros()
    diff = (got - want).tocoo()
    diff.eliminate_zeros()
    if diff.nnz:
        i, j = int(diff.row[0]), int(diff.col[0])
        raise SimulationError(
            f"{dataflow}: functional C differs from scipy's A·B in {diff.nnz} entries; first at "
            f"({i}, {j}): model {got[i, j]}, scipy {want[i, j]}"
        )
