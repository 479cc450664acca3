"""The published SpGEMM trends, reproduced by the model (the numbers in docs/spgemm.md).

    python benchmarks/spgemm_trends.py

1. Outer product vs row-wise (Gustavson): partial-product DRAM traffic on power-law matrices
   (and, for contrast, on a FEM matrix).
2. Inner product: share of fetched B elements no row of the resident A chunk uses, and share
   of intersections that produce an output, as density falls.
3. Hash accumulator: partial-product traffic as the table shrinks below the rows of C.
"""

from __future__ import annotations

from archsim.spgemm import simulate_dataflow
from dataflows.spgemm import SpGEMMProblem
from workloads.generators.sparse_matrices import rmat, uniform_random
from workloads.load import load_hardware
from workloads.matrices import resolve_matrix


def mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def outer_vs_gustavson() -> None:
    hw = load_hardware("sat_vcu1525")
    print("1. partial-product DRAM traffic, C = A·A on sat_vcu1525")
    print(f"   {'matrix':<28} {'outer':>12} {'gustavson':>12} {'ratio':>8} {'hash':>10}")
    cases = [
        ("rmat n=2048 nnz=16000", rmat(2048, 16000, seed=9)),
        ("lookalike:wiki-Vote", resolve_matrix("lookalike:wiki-Vote", {}, 0, ".").matrix),
        ("lookalike:email-Enron", resolve_matrix("lookalike:email-Enron", {}, 0, ".").matrix),
        ("pyamg:bar (FEM)", resolve_matrix("pyamg:bar", {}, 0, ".").matrix),
    ]
    for name, a in cases:
        problem = SpGEMMProblem(a, a, hw)
        part = {d: simulate_dataflow(problem, d).dram_bytes["partial"]
                for d in ("outer", "gustavson", "hash")}
        ratio = part["outer"] / part["gustavson"] if part["gustavson"] else float("inf")
        print(f"   {name:<28} {mb(part['outer']):>12} {mb(part['gustavson']):>12} "
              f"{ratio:>7.1f}x {mb(part['hash']):>10}")


def inner_waste() -> None:
    hw = load_hardware("tiny", overrides=["spgemm.scratchpad_bytes=1024"])
    print("2. inner product on tiny with a 1 KiB scratchpad, A = uniform 400 x 400, C = A·A")
    print(f"   {'density':>8} {'B fetched':>10} {'B useful':>9} {'wasted':>7} "
          f"{'intersections':>14} {'effectual':>10}")
    for density in (0.002, 0.01, 0.05):
        a = uniform_random(400, 400, density=density, seed=10)
        c = simulate_dataflow(SpGEMMProblem(a, a, hw), "inner").counters
        waste = 1 - c["b_elements_useful"] / c["b_elements_fetched"]
        print(f"   {density:>8} {c['b_elements_fetched']:>10,} {c['b_elements_useful']:>9,} "
              f"{waste:>7.1%} {c['intersections']:>14,} "
              f"{c['effectual_outputs'] / c['intersections']:>10.2%}")


def hash_overflow() -> None:
    print("3. hash accumulator: partial-product DRAM traffic vs table size")
    a = uniform_random(64, 64, density=0.1, seed=11)
    base = load_hardware("tiny")
    print(f"   uniform 64 x 64, density 0.1 (longest row of C: "
          f"{int(SpGEMMProblem(a, a, base).row_nnz_c.max())} columns), tiny engine:")
    for entries in (16, 32, 64, 256, 1024):
        hw = load_hardware("tiny", overrides=[f"spgemm.hash_entries={entries}",
                                              f"spgemm.hash_ways={entries // 8}"])
        r = simulate_dataflow(SpGEMMProblem(a, a, hw), "hash")
        print(f"   {entries:>6} entries ({entries // 8}-way): partial {r.dram_bytes['partial']:>9,} B,"
              f" spilled {r.counters['spilled_products']:>6,}, passes <= {r.counters['max_passes']}")
    w = resolve_matrix("lookalike:wiki-Vote", {}, 0, ".").matrix
    print(f"   lookalike:wiki-Vote (longest row of C: "
          f"{int(SpGEMMProblem(w, w, load_hardware('sat_vcu1525')).row_nnz_c.max()):,} columns), "
          f"sat_vcu1525 engine:")
    for entries in (1024, 4096, 16384, 65536):
        hw = load_hardware("sat_vcu1525", overrides=[f"spgemm.hash_entries={entries}"])
        r = simulate_dataflow(SpGEMMProblem(w, w, hw), "hash")
        print(f"   {entries:>6} entries: partial {mb(r.dram_bytes['partial']):>10}, "
              f"spilled {r.counters['spilled_products']:>10,}, cycles {r.cycles:>12,}")


if __name__ == "__main__":
    outer_vs_gustavson()
    inner_waste()
    hash_overflow()
