"""The SpGEMM engine's SimPy model: chunks through a shared DRAM channel and the engine.

Each dataflow's mapping (``dataflows.spgemm``) is a list of phases, each a
:class:`~dataflows.spgemm.ChunkTable`. A phase runs as three cooperating units:

- :class:`DramChannel`, the one DRAM port shared by every transfer: transfers are served one
  at a time in the order they are issued, each taking ``transfer_cycles(bytes)``;
- :class:`Fetcher`, the DMA side: it issues chunk ``c``'s fetch as soon as one of the two
  scratchpad slots is free (double buffering: chunk ``c`` waits for chunk ``c - 2``);
- :class:`Engine`, the multipliers with the merger, hash accumulator or intersect unit: it
  starts chunk ``c`` when its fetch is done and chunk ``c - 1`` is finished, works the chunk's
  cycles, then issues the chunk's write-back and frees its slot (in that order: a write-back
  is queued before the fetch that reuses the slot).

Phases run back to back (the outer product's merge phase starts when its multiply phase has
drained). Time is in integer cycles; statistics go into explicit objects; nothing prints.
Every dataflow also runs functionally (:func:`functional_c`): its own order of computation on
the real values, compared with scipy's ``A @ B``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import simpy

from dataflows import spgemm as mapping
from dataflows.spgemm import ChunkTable, SpGEMMProblem, transfer_cycles
from workloads.arith import wrap
from workloads.errors import SimulationError
from workloads.spec import HardwareSpec, SpGEMMOp

__all__ = [
    "DramChannel",
    "Fetcher",
    "Engine",
    "PhaseTrace",
    "DataflowResult",
    "SpGEMMOpResult",
    "run_phases",
    "simulate_dataflow",
    "simulate_spgemm",
    "functional_c",
]

_MAPPERS = {
    "inner": mapping.map_inner,
    "outer": mapping.map_outer,
    "gustavson": mapping.map_gustavson,
    "hash": mapping.map_hash,
}


@dataclass
class PhaseTrace:
    """When each chunk of a phase ran on the engine, and the channel's busy cycles."""

    name: str
    engine_start: list[int] = field(default_factory=list)
    engine_end: list[int] = field(default_factory=list)
    fetch_end: list[int] = field(default_factory=list)
    end: int = 0


class DramChannel:
    """The single DRAM port: one transfer at a time, in issue order.

    Parameters
    ----------
    env : simpy.Environment
    hw : HardwareSpec
        ``hw.dram`` gives the latency and the bytes per cycle (``transfer_cycles``).
    """

    def __init__(self, env: simpy.Environment, hw: HardwareSpec) -> None:
        self.env, self.hw = env, hw
        self.busy_cycles = 0
        self._queue = simpy.Store(env)
        env.process(self._serve())

    def issue(self, nbytes: int) -> simpy.Event:
        """Queue a transfer; the returned event fires when it has completed."""
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()  # nothing to move: no request reaches the memory
        else:
            self._queue.put((int(nbytes), done))
        return done

    def _serve(self):
        while True:
            nbytes, done = yield self._queue.get()
            cycles = transfer_cycles(nbytes, self.hw)
            yield self.env.timeout(cycles)
            self.busy_cycles += cycles
            done.succeed()


class Fetcher:
    """Issues each chunk's fetch into a free scratchpad slot (two slots: double buffering)."""

    def __init__(self, env: simpy.Environment, channel: DramChannel, table: ChunkTable,
                 trace: PhaseTrace) -> None:
        self.env, self.channel, self.table, self.trace = env, channel, table, trace
        self.slots = simpy.Container(env, capacity=2, init=2)
        self.fetched = [env.event() for _ in range(table.n_chunks)]
        self.process = env.process(self.run())

    def run(self):
        sizes = self.table.fetch_total()
        for c in range(self.table.n_chunks):
            yield self.slots.get(1)
            self.channel.issue(int(sizes[c])).callbacks.append(self._arrived(c))

    def _arrived(self, c: int):
        def callback(_event) -> None:
            self.trace.fetch_end.append(self.env.now)
            self.fetched[c].succeed()

        return callback


class Engine:
    """The engine: works each chunk's cycles once it is fetched and the engine is free."""

    def __init__(self, env: simpy.Environment, channel: DramChannel, fetcher: Fetcher,
                 table: ChunkTable, trace: PhaseTrace) -> None:
        self.env, self.channel, self.fetcher = env, channel, fetcher
        self.table, self.trace = table, trace
        self.busy_cycles = 0
        self.writebacks: list[simpy.Event] = []
        self.process = env.process(self.run())

    def run(self):
        table, env = self.table, self.env
        out = table.write_total()
        if table.readback_bytes is not None:
            out = out + table.readback_bytes
        for c in range(table.n_chunks):
            if not self.fetcher.fetched[c].triggered:
                yield self.fetcher.fetched[c]
            self.trace.engine_start.append(env.now)
            cycles = int(table.engine_cycles[c])
            if cycles:
                yield env.timeout(cycles)
            self.busy_cycles += cycles
            self.trace.engine_end.append(env.now)
            # Write-back first, then the slot: the fetch that refills it queues behind.
            self.writebacks.append(self.channel.issue(int(out[c])))
            self.fetcher.slots.put(1)
        if self.writebacks:
            yield env.all_of(self.writebacks)
        self.trace.end = env.now


def run_phases(tables: list[ChunkTable], hw: HardwareSpec) -> tuple[int, list[PhaseTrace], int]:
    """Run the phases back to back from an idle engine.

    Returns
    -------
    tuple
        Total cycles, one :class:`PhaseTrace` per phase, and the DRAM channel's busy cycles.
    """
    env = simpy.Environment()
    channel = DramChannel(env, hw)
    traces = []
    for table in tables:
        trace = PhaseTrace(table.name)
        fetcher = Fetcher(env, channel, table, trace)
        engine = Engine(env, channel, fetcher, table, trace)
        env.run(until=engine.process)
        traces.append(trace)
    return env.now, traces, channel.busy_cycles


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
    problem: SpGEMMProblem, dataflow: str, functional: bool = False
) -> DataflowResult:
    """Map and simulate one dataflow; with ``functional``, also check its C against scipy.

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
    cycles, _, dma_busy = run_phases(tables, hw)
    checked = "skipped"
    if functional:
        _check_c(problem, dataflow, functional_c(problem, dataflow, tables, trace))
        checked = "passed"
    sums: dict[str, int] = {"a": 0, "b": 0, "c": 0, "partial": 0}
    read = write = 0
    units: dict[str, int] = {"dma": dma_busy, "engine": 0}
    counters: dict[str, int] = {}
    for t in tables:
        for kind, v in t.fetch_bytes.items():
            sums[kind] += int(v.sum())
            read += int(v.sum())
        for kind, v in t.write_bytes.items():
            sums[kind] += int(v.sum())
            write += int(v.sum())
        if t.readback_bytes is not None:
            sums["partial"] += int(t.readback_bytes.sum())
            read += int(t.readback_bytes.sum())
        units["engine"] += int(t.engine_cycles.sum())
        for k, v in t.units.items():
            units[k] = units.get(k, 0) + v
        for k, v in t.counters.items():
            counters[k] = counters.get(k, 0) + v
    p = hw.spgemm.multipliers
    return DataflowResult(
        dataflow=dataflow,
        cycles=cycles,
        dram_bytes=sums,
        dram_read_bytes=read,
        dram_write_bytes=write,
        multiplies=problem.multiplies,
        multiplier_utilization=problem.multiplies / (cycles * p) if cycles else 0.0,
        hash_collisions=counters.pop("hash_collisions", 0),
        merge_stall_cycles=counters.pop("merge_stall_cycles", 0),
        unit_busy_cycles=units,
        counters=counters,
        chunks=sum(t.n_chunks for t in tables),
        functional_check=checked,
    )


def simulate_spgemm(op: SpGEMMOp, hw: HardwareSpec) -> SpGEMMOpResult:
    """Simulate every dataflow the op lists on the hardware's SpGEMM engine."""
    from workloads.matrices import matrix_stats

    a, b = op.operands()
    problem = SpGEMMProblem(a.matrix, b.matrix, hw)
    stats = matrix_stats(a.matrix, None if op.b is None else b.matrix)
    results = tuple(
        simulate_dataflow(problem, name, functional=op.functional_check) for name in op.dataflows
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
