"""Fingerprints of every SpGEMM result, to prove that a speed-up changed nothing.

For each case (matrix × hardware) and each dataflow it hashes the full result: the
``DataflowResult`` (cycles, DRAM bytes by kind, units, counters), every chunk table (all
arrays), and for ``hash`` the per-row trace (cycles, spill bytes, kept keys) and, on the small
cases, the functional C in drain order. Small hash tables provoke spills (several passes per
row). It also runs the shipped ``spgemm_*`` examples through ``archsim run`` and hashes their
``results.json``. Run it from the repository root before and after a change and compare:

    python benchmarks/spgemm_fingerprint.py [--skip-examples] > before.txt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATAFLOWS = ("inner", "outer", "gustavson", "hash")


def _digest(obj) -> str:
    h = hashlib.sha256()

    def feed(x) -> None:
        if isinstance(x, np.ndarray):
            h.update(f"nd{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(f"k{k}".encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"l{len(x)}".encode())
            for v in x:
                feed(v)
        else:
            h.update(repr(x).encode())

    feed(obj)
    return h.hexdigest()[:16]


def _cases():
    from workloads.generators.sparse_matrices import banded, rmat, uniform_random
    from workloads.load import load_hardware

    def hw(preset: str, **fields):
        return load_hardware(preset, overrides=[f"spgemm.{k}={v}" for k, v in fields.items()])

    tiny, sat = hw("tiny"), hw("sat_vcu1525")
    small = hw("tiny", hash_entries=8, hash_ways=2)
    direct = hw("tiny", hash_banks=1, hash_ways=1, hash_entries=4)
    sat_1k = hw("sat_vcu1525", hash_entries=1024)
    sat_4k = hw("sat_vcu1525", hash_entries=4096, hash_ways=2)
    r_small = rmat(512, 5000, seed=4)
    u_small = uniform_random(64, 64, density=0.1, seed=3)
    band = banded(2000, bandwidth=3, seed=5)
    power = rmat(4096, 60000, a=0.7, b=0.1, c=0.1, seed=7)
    r_mid = rmat(20000, 200000, seed=0)
    rect_b = uniform_random(512, 300, density=0.05, seed=9)
    # (name, A, B, hardware, functional, dataflows): the hash table's fields change only the
    # hash dataflow, so the small-table variants run that one alone.
    hash_only = ("hash",)
    return [
        ("rmat512-tiny", r_small, r_small, tiny, True, DATAFLOWS),
        ("rmat512-8entry", r_small, r_small, small, True, hash_only),
        ("rmat512-direct", r_small, r_small, direct, True, hash_only),
        ("rmat512xrect-8entry", r_small, rect_b, small, True, DATAFLOWS),
        ("uniform64-8entry", u_small, u_small, small, True, DATAFLOWS),
        ("banded2000-tiny", band, band, tiny, True, DATAFLOWS),
        ("banded2000-direct", band, band, direct, True, hash_only),
        ("power4096-sat", power, power, sat, True, DATAFLOWS),
        ("power4096-sat1k", power, power, sat_1k, True, hash_only),
        ("rmat20k-sat", r_mid, r_mid, sat, False, DATAFLOWS),
        ("rmat20k-sat4k", r_mid, r_mid, sat_4k, False, hash_only),
    ]


def fingerprint_case(a, b, hw, functional: bool, dataflows=DATAFLOWS) -> dict[str, str]:
    from archsim.spgemm import simulate_dataflow
    from dataflows import spgemm as S

    out = {}
    for dataflow in dataflows:
        problem = S.SpGEMMProblem(a, b, hw)
        result = simulate_dataflow(problem, dataflow, functional=functional)
        problem = S.SpGEMMProblem(a, b, hw)
        parts = {"result": result.as_dict()}
        if dataflow == "hash":
            trace = S.hash_row_trace(problem, functional=functional)
            tables = S.map_hash(problem, trace)
            parts["trace"] = {k: v for k, v in vars(trace).items() if k != "block_start"}
        else:
            tables = {"inner": S.map_inner, "outer": S.map_outer,
                      "gustavson": S.map_gustavson}[dataflow](problem)
        parts["tables"] = [vars(t) for t in tables]
        out[dataflow] = f"{result.cycles} {_digest(parts)}"
    return out


def fingerprint_examples() -> dict[str, str]:
    out = {}
    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "workloads" / "examples").glob("spgemm_*.yaml")):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "archsim.cli", "run", str(path), "--out", tmp,
                            "--quiet"], check=True, capture_output=True, cwd=root)
            results = json.loads((Path(tmp) / "results.json").read_text())
        out[path.name] = _digest(json.dumps(results.get("spgemm", results), sort_keys=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-examples", action="store_true")
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args(argv)
    for name, a, b, hw, functional, dataflows in _cases():
        if args.only and name not in args.only:
            continue
        cpu = time.process_time()
        for dataflow, fp in fingerprint_case(a, b, hw, functional, dataflows).items():
            print(f"{name:<22} {dataflow:<10} {fp}")
        print(f"# {name}: {time.process_time() - cpu:.1f} CPU-s", file=sys.stderr)
    if not args.skip_examples:
        for name, fp in fingerprint_examples().items():
            print(f"{name:<33} {fp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
