"""SpGEMM on the one program (dataflows/spgemm_program.py): the instructions each dataflow's
chunk tables become, their timing against a plain recurrence of the two-slot pipeline, and both
timing engines equal on every dataflow."""

from __future__ import annotations

import numpy as np
import pytest

from archsim.fast import run_program_fast
from archsim.model import run_program
from archsim.spgemm import run_tables, simulate_dataflow
from dataflows.cost import transfer_cycles
from dataflows.isa import MODEL_ONLY, SPGEMM_ENGINE_OPS, Op, Unit, encode
from dataflows.spgemm import ChunkTable, SpGEMMProblem
from dataflows.spgemm_program import ENGINE_OP, spgemm_program
from workloads.generators.sparse_matrices import banded, rmat
from workloads.load import load_hardware

TINY = load_hardware("tiny")
DATAFLOWS = ("inner", "outer", "gustavson", "hash")


def table(name: str, cycles, fetch, out, back=None) -> ChunkTable:
    n = len(cycles)
    return ChunkTable(
        name=name, engine_cycles=np.asarray(cycles, np.int64),
        fetch_bytes={"a": np.asarray(fetch, np.int64)},
        write_bytes={"c": np.asarray(out, np.int64)},
        readback_bytes=None if back is None else np.asarray(back, np.int64),
        row_bounds=np.arange(n + 1),
    )


def test_chunks_become_load_work_store_with_the_store_before_the_refill():
    program = spgemm_program([table("hash", [5, 6, 7], [4, 4, 4], [2, 0, 2], [0, 3, 0])])
    ops = [(i.op, i.slot) for i in program.instrs]
    assert ops == [(Op.SP_LOAD, 0), (Op.SP_LOAD, 1),
                   (Op.SP_HASH, 0), (Op.SP_STORE, 0), (Op.SP_LOAD, 0),
                   (Op.SP_HASH, 1), (Op.SP_STORE, 1),  # no output, but spilled bytes back
                   (Op.SP_HASH, 0), (Op.SP_STORE, 0)]
    load0, load1, hash0, store0, load2, hash1, store1, hash2, store2 = program.instrs
    assert hash0.wait == (1, 0, 0) and hash1.wait == (2, 0, 0)  # its own load
    assert store0.wait == (0, 1, 0) and store1.wait == (0, 2, 0)  # its chunk's engine op
    assert load2.wait == (0, 1, 0)  # slot 0 is free once chunk 0 is worked
    assert hash2.wait == (4, 0, 0)  # load 2 is the DMA's fourth instruction
    assert (hash0.cycles, store1.nbytes, store1.spill_bytes) == (5, 0, 3)
    assert all(i.unit == Unit.PE for i in program.instrs if i.op in SPGEMM_ENGINE_OPS)


def test_nothing_to_move_issues_no_transfer():
    program = spgemm_program([table("gustavson", [3, 3], [0, 8], [0, 0])])
    assert [i.op for i in program.instrs] == [Op.SP_LOAD, Op.SP_MERGE, Op.SP_MERGE]


def test_every_phase_name_has_its_engine_op():
    problem = SpGEMMProblem(rmat(64, 300, seed=1), rmat(64, 300, seed=1), TINY)
    from archsim.spgemm import _MAPPERS

    names = {t.name for mapper in _MAPPERS.values() for t in mapper(problem)}
    assert names == set(ENGINE_OP)


def test_spgemm_words_are_model_only():
    program = spgemm_program([table("inner", [1], [8], [8])])
    assert {i.op for i in program.instrs} <= MODEL_ONLY
    with pytest.raises(ValueError, match="op"):
        encode(program.instrs[0])


def reference_cycles(tables: list[ChunkTable], hw) -> int:
    """The pipeline as a plain recurrence: the DMA in program order (load 0, load 1, then per
    chunk its store and the load two chunks on), each transfer starting when the DMA is free
    and its data is ready; the engine in order, each chunk once its load is done; a slot's
    next load once the engine has finished the chunk that used it."""
    now = {"dma": 0, "engine": 0}
    slot_free = [0, 0]
    turn = 0
    for t in tables:
        _reference_phase(t, hw, now, slot_free, turn)
        turn = (turn + t.n_chunks) % 2
    return max(now.values())


def _reference_phase(t: ChunkTable, hw, now: dict, slot_free: list[int], turn: int) -> None:
    n = t.n_chunks
    fetch, out = t.fetch_total(), t.write_total()
    back = t.readback_bytes if t.readback_bytes is not None else np.zeros(n, np.int64)
    slot = [(turn + c) % 2 for c in range(n)]
    loaded = [0] * n

    def load(c: int) -> None:
        if fetch[c] > 0:
            now["dma"] = max(now["dma"], slot_free[slot[c]]) + transfer_cycles(int(fetch[c]), hw)
            loaded[c] = now["dma"]

    for c in range(min(2, n)):
        load(c)
    for c in range(n):
        now["engine"] = max(now["engine"], loaded[c]) + int(t.engine_cycles[c])
        slot_free[slot[c]] = now["engine"]
        if out[c] + back[c] > 0:
            now["dma"] = max(now["dma"], now["engine"]) + transfer_cycles(int(out[c] + back[c]), hw)
        if c + 2 < n:
            load(c + 2)


def _sizes(rng, n: int, high: int) -> np.ndarray:
    # Zeros are common: empty chunks, chunks without output, phases without spills.
    return np.where(rng.random(n) < 0.25, 0, rng.integers(1, high, n))


@pytest.mark.parametrize("seed", range(40))
def test_program_timing_equals_the_pipeline_recurrence_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    hw = load_hardware("tiny", overrides=[f"dram.latency_cycles={int(rng.integers(0, 30))}",
                                          f"dram.bandwidth_bytes_per_cycle={int(rng.choice([1, 8, 64]))}"])
    tables = []
    for name in rng.choice(list(ENGINE_OP), size=int(rng.integers(1, 4))):
        n = int(rng.integers(1, 12))
        tables.append(table(str(name), _sizes(rng, n, 200), _sizes(rng, n, 600),
                            _sizes(rng, n, 600),
                            _sizes(rng, n, 100) if rng.random() < 0.5 else None))
    want = reference_cycles(tables, hw)
    program = spgemm_program(tables)
    simpy, fast = run_program(program, hw, trace=True), run_program_fast(program, hw, trace=True)
    assert simpy.cycles == fast.cycles == want
    assert simpy.trace == fast.trace
    assert simpy.busy == fast.busy


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("make", [lambda: rmat(256, 1500, seed=4), lambda: banded(300, bandwidth=5, seed=2)],
                         ids=["rmat", "banded"])
def test_both_engines_give_the_same_result_on_every_dataflow(dataflow, make):
    small = load_hardware("tiny", overrides=["spgemm.hash_entries=16", "spgemm.hash_ways=2"])
    a = make()
    problem = SpGEMMProblem(a, a, small)
    simpy = simulate_dataflow(problem, dataflow, run=run_program)
    fast = simulate_dataflow(problem, dataflow, run=run_program_fast)
    assert simpy == fast
    # The program's DRAM traffic is the mapping's: loads read, stores write and read back.
    assert simpy.dram_read_bytes + simpy.dram_write_bytes == sum(simpy.dram_bytes.values())


def test_tags_name_the_phases():
    tables = [table("outer.multiply", [2], [8], [8]), table("outer.merge", [3, 1], [8, 8], [8, 8])]
    program, stats = run_tables(tables, TINY)
    assert program.tags == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert sorted(stats.tasks) == [0, 1]
    assert stats.tasks[0].dram_read_bytes == 8 and stats.tasks[1].dram_write_bytes == 16
