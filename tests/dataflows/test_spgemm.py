"""dataflows/spgemm.py and archsim/spgemm.py: formulas, the exact hash model, functional
execution of every dataflow, the chunk pipeline, and the published SpGEMM trends."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import scipy.sparse as sp

from archsim.spgemm import engine_spans, functional_c, run_tables, simulate_dataflow
from dataflows import spgemm as S
from dataflows.spgemm import ChunkTable, SpGEMMProblem
from workloads.generators.sparse_matrices import banded, rmat, uniform_random
from workloads.load import load_hardware
from workloads.matrices import resolve_matrix

TINY = load_hardware("tiny")
SAT = load_hardware("sat_vcu1525")
DATAFLOWS = ("inner", "outer", "gustavson", "hash")


def small_table(**fields):
    return load_hardware("tiny", overrides=[f"spgemm.{k}={v}" for k, v in fields.items()])


# -- formulas ---------------------------------------------------------------------------------


def test_transfer_cycles_and_beats():
    assert S.transfer_cycles(0, TINY) == 0
    assert S.transfer_cycles(1, TINY) == 10 + 1
    assert S.transfer_cycles(17, TINY) == 10 + 3  # 8-byte beats
    assert S.b_row_beats(np.array([0, 1, 2, 3, 5]), TINY).tolist() == [1, 1, 1, 2, 3]


def test_hash_bucket_is_fibonacci_hashing():
    cols = np.array([0, 1, 2, 12345, 2**16 - 1])
    bits = TINY.spgemm.hash_buckets.bit_length() - 1
    want = [((c * S.HASH_MULTIPLIER) & 0xFFFFFFFF) >> (32 - bits) for c in cols.tolist()]
    assert S.hash_bucket(cols, TINY).tolist() == want


def test_greedy_chunks_respect_capacity():
    sizes = np.array([3, 3, 3, 10, 1, 1])
    assert S.greedy_chunks(sizes, 6).tolist() == [0, 2, 3, 4, 6]  # 10 > 6 stands alone


def test_merge_levels_bound_intermediates():
    levels = S.merge_level_sizes(np.array([1, 4, 20]), np.array([5, 40, 100]),
                                 np.array([5, 10, 7]), radix=4)
    assert [lv.tolist() for lv in levels] == [[5, 40, 100], [0, 0, 35], [0, 0, 14]]


def test_problem_rejects_values_wider_than_the_datapath():
    a = sp.csr_matrix(np.array([[300, 0], [0, 1]]))
    with pytest.raises(Exception, match="outside the 8-bit operands"):
        SpGEMMProblem(a, a, TINY)


# -- the hash model against a plain sequential model of the engine -------------------------


def reference_hash_cycles(problem: SpGEMMProblem) -> tuple[list[int], int]:
    """Row cycles of the hash engine, one product at a time (docs/spgemm.md, rtl/spgemm.py)."""
    hw = problem.hw
    p, nb, ways = hw.spgemm.multipliers, hw.spgemm.hash_banks, hw.spgemm.hash_ways
    a, b = problem.a, problem.b

    def run_beat(table, lanes, spills):
        busy = defaultdict(int)
        events = []
        for col in lanes:
            bucket = int(S.hash_bucket(np.array([col]), hw)[0])
            keys = table.setdefault(bucket, [])
            if col in keys:
                probes = keys.index(col) + 1
            elif len(keys) < ways:
                keys.append(col)
                probes = len(keys)
            else:
                probes = ways
            busy[bucket % nb] += probes
            if probes == ways and col not in keys:
                events.append((busy[bucket % nb], bucket % nb, col))
        spills.extend(col for _, _, col in sorted(events))
        return max(busy.values(), default=0)

    def drain(table):
        per_bank = defaultdict(int)
        for bucket, keys in table.items():
            per_bank[bucket % nb] += len(keys)
        return max(per_bank.values(), default=0)

    rows, spilled_total = [], 0
    for i in range(problem.n_rows):
        lo, hi = a.indptr[i], a.indptr[i + 1]
        if lo == hi:
            rows.append(2)
            continue
        table, spills, cycles = {}, [], 0
        for e in range(lo, hi):
            k = a.indices[e]
            cols = b.indices[b.indptr[k] : b.indptr[k + 1]].tolist()
            cycles += 2
            for q in range(0, max(1, len(cols)), p):
                cycles += run_beat(table, cols[q : q + p], spills)
        cycles += max(1, drain(table))
        while spills:
            spilled_total += len(spills)
            stream, spills, table = spills, [], {}
            cycles += int(S.spill_readback_cycles(len(stream), hw)) + 1
            for q in range(0, len(stream), p):
                cycles += run_beat(table, stream[q : q + p], spills)
            cycles += drain(table)
        rows.append(cycles)
    return rows, spilled_total


@pytest.mark.parametrize("hw", [TINY, small_table(hash_entries=8, hash_ways=2),
                                small_table(hash_banks=1, hash_ways=1, hash_entries=4)],
                         ids=["tiny", "8-entry", "direct-mapped"])
@pytest.mark.parametrize("seed", [1, 2])
def test_vectorized_hash_model_equals_sequential_reference(hw, seed):
    a = uniform_random(30, 30, density=0.2, seed=seed)
    b = rmat(30, 150, seed=seed)
    problem = SpGEMMProblem(a, b, hw)
    trace = S.hash_row_trace(problem)
    rows, spilled = reference_hash_cycles(problem)
    assert trace.cycles.tolist() == rows
    assert trace.spilled == spilled


# -- functional execution: every dataflow computes C = A·B -------------------------------------


MATRICES = {
    "uniform": lambda: uniform_random(60, 60, density=0.08, seed=3),
    "rmat": lambda: rmat(128, 900, seed=4),
    "pyamg": lambda: resolve_matrix("pyamg:bar", {}, 0, ".").matrix[:150, :150],
    "banded": lambda: banded(80, bandwidth=2, seed=5),
}


@pytest.mark.parametrize("hw", [TINY, SAT], ids=["tiny", "sat"])
@pytest.mark.parametrize("name", sorted(MATRICES))
@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_functional_execution_equals_scipy(hw, name, dataflow):
    a = sp.csr_matrix(MATRICES[name]())
    problem = SpGEMMProblem(a, a, hw)
    result = simulate_dataflow(problem, dataflow, functional=True)
    assert result.functional_check == "passed"
    mapper = {"inner": S.map_inner, "outer": S.map_outer, "gustavson": S.map_gustavson,
              "hash": S.map_hash}[dataflow]
    rows, cols, vals = functional_c(problem, dataflow, mapper(problem))
    assert len(set(zip(rows.tolist(), cols.tolist()))) == len(rows)  # each output merged once
    got = sp.csr_matrix((vals, (rows, cols)), shape=a.shape)
    assert (got - a @ a).count_nonzero() == 0


def test_rectangular_product_all_dataflows():
    a = uniform_random(40, 70, density=0.1, seed=6)
    b = uniform_random(70, 25, density=0.15, seed=7)
    problem = SpGEMMProblem(a, b, TINY)
    for dataflow in DATAFLOWS:
        assert simulate_dataflow(problem, dataflow, functional=True).functional_check == "passed"


def test_every_dataflow_performs_the_same_multiplies():
    a = rmat(100, 600, seed=8)
    problem = SpGEMMProblem(a, a, SAT)
    want = int((sp.csr_matrix((np.ones(a.nnz), a.indices, a.indptr), shape=a.shape) ** 2).sum())
    assert {simulate_dataflow(problem, d).multiplies for d in DATAFLOWS} == {want}


# -- the chunk pipeline ------------------------------------------------------------------------


def test_pipeline_double_buffers_and_queues_writeback_before_refill():
    hw = load_hardware("tiny", overrides=["dram.latency_cycles=0", "dram.bandwidth_bytes_per_cycle=1"])
    table = ChunkTable(
        name="gustavson", engine_cycles=np.array([5, 5, 5]),
        fetch_bytes={"a": np.array([4, 4, 4])}, write_bytes={"c": np.array([2, 2, 2])},
    )
    program, stats = run_tables([table], hw, trace=True)
    # fetch0 0-4, fetch1 4-8; engine c0 4-9, wb0 9-11, fetch2 11-15 (after wb0); c1 9-14;
    # wb1 15-17; c2 15-20; wb2 20-22.
    assert engine_spans(program, stats) == [(4, 9), (9, 14), (15, 20)]
    assert stats.cycles == 22
    assert stats.busy[0] == 3 * 4 + 3 * 2


# -- the published trends, on small generated matrices ------------------------------------------


def test_outer_product_moves_far_more_partial_products_than_gustavson_on_power_law():
    a = rmat(2048, 16000, seed=9)
    problem = SpGEMMProblem(a, a, SAT)
    outer = simulate_dataflow(problem, "outer").dram_bytes["partial"]
    gustavson = simulate_dataflow(problem, "gustavson").dram_bytes["partial"]
    assert outer > 0
    assert outer >= 20 * max(gustavson, 1)


def test_inner_product_wastes_fetches_at_low_density():
    # A 1 KiB scratchpad: A stays in row chunks of 512 bytes, B streams past each chunk.
    hw = load_hardware("tiny", overrides=["spgemm.scratchpad_bytes=1024"])

    def counters(density):
        a = uniform_random(400, 400, density=density, seed=10)
        return simulate_dataflow(SpGEMMProblem(a, a, hw), "inner").counters

    def waste(c):  # fetched B elements that no row of the chunk multiplies
        return 1 - c["b_elements_useful"] / c["b_elements_fetched"]

    def effectual(c):  # intersections that produce an output
        return c["effectual_outputs"] / c["intersections"]

    sparse, mid, denser = counters(0.002), counters(0.01), counters(0.05)
    assert waste(sparse) > waste(mid) > waste(denser)
    assert waste(sparse) > 0.75
    assert effectual(sparse) < 0.01 < 0.5 < effectual(denser)


def test_hash_avoids_partial_traffic_until_its_table_overflows():
    a = uniform_random(64, 64, density=0.1, seed=11)
    largest_row = int(SpGEMMProblem(a, a, TINY).row_nnz_c.max())
    partial = {}
    for entries in (16, 32, 64, 256, 1024):
        hw = small_table(hash_entries=entries, hash_ways=entries // 8)
        partial[entries] = simulate_dataflow(SpGEMMProblem(a, a, hw), "hash").dram_bytes["partial"]
    assert partial[1024] == 0 and partial[256] == 0  # table well above the longest row of C
    assert 16 < largest_row and partial[16] > 0  # a table smaller than a row must spill
    assert partial[16] >= partial[32] >= partial[64] >= partial[256]


@pytest.mark.parametrize("entries", [64, 1024], ids=["numbered-columns", "many-blocks"])
def test_hash_model_does_not_depend_on_its_dense_tables(monkeypatch, entries):
    a = rmat(128, 900, seed=4)
    hw = small_table(hash_entries=8, hash_ways=2)  # spills: several passes per row
    want = vars(S.hash_row_trace(SpGEMMProblem(a, a, hw), functional=True))
    monkeypatch.setattr(S, "_DENSE_ENTRIES", entries)  # 64: narrower than one row of C
    got = vars(S.hash_row_trace(SpGEMMProblem(a, a, hw), functional=True))
    want.pop("block_start"), got.pop("block_start")  # bookkeeping: where the last block began
    assert want.keys() == got.keys()
    for name, value in want.items():
        assert np.array_equal(got[name], value), name
