"""Mutation fuzzing of the inputs the loader and the data-file readers take (issue 15).

Four families, each a seeded stream of cases:

* ``yaml``: byte-level mutations (YAML tokens, aliases, tags, NUL, bad bytes, deletions) of every
  shipped example, preset and sweep, loaded as the file's kind (workload, hardware or sweep);
* ``mtx``: mutated Matrix Market files (plain and gzip) through ``resolve_matrix``;
* ``npy``: mutated ``.npy`` Q arrays and ``.npz`` block masks through the attention readers;
* ``store``: mutated results stores (``results.db`` of a real sweep: bytes flipped, truncated,
  pages dropped) and ``results.json`` files, read as ``archsim report`` reads them.

A case passes when it loads or fails with one ``ArchsimError`` line; it fails on any other
exception, a message over several lines, or taking over ``--slow`` seconds. A crash of the
interpreter (scipy's Matrix Market parser segfaulted on some lines before the body check) ends
the run. Prints the counts and exits 1 if any case failed or memory grew by over 1 GiB::

    python benchmarks/fuzz_inputs.py --cases 10000          # about a minute per 10,000 cases

Sweeps run end to end and Ctrl-C are covered by tests/reports (test_interrupt, test_kill_resume,
test_store_safety), not here.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import random
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from workloads.errors import ArchsimError
from workloads.load import EXAMPLE_DIR, PRESET_DIR, load_hardware, load_workload

YAML_TOKENS = [b"&a ", b"*a", b"<<: ", b"!foo ", b"!!int ", b"!!python/object ", b"? ", b"[", b"{",
               b"]", b"}", b"\0", b"\xff", b"\t", b"- ", b": ", b"'", b'"', b"\n  ", b"#",
               b"%YAML 1.1\n", b"---\n", b"...\n", b"|", b">", b".inf", b".nan", b"-1", b"1e400",
               b"0x10", b"~", b"99999999999999999999999", b"../../x", b"/abs"]
MTX_TOKENS = [b"\t", b"\r", b"\r\n", b"  ", b"1.5", b"nan", b"inf", b"-", b"e", b"%", b"0", b"\0",
              b"-1", b"\n", b" ", b"99999999999999999999"]
MTX_BASES = [
    b"%%MatrixMarket matrix coordinate integer general\n% c\n4 4 3\n1 1 1\n2 3 -2\n4 4 5\n",
    b"%%MatrixMarket matrix coordinate real symmetric\n4 4 3\n1 1 1.5\n3 2 -2e1\n4 4 5\n",
    b"%%MatrixMarket matrix coordinate pattern general\n3 3 2\n1 1\n2 2\n",
    b"%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n",
    b"%%MatrixMarket matrix coordinate complex general\n2 2 2\n1 1 1 2\n2 2 3 0\n",
]


def mutate(data: bytes, rng: random.Random, tokens: list[bytes], edits: int = 3) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, edits)):
        pos = rng.randrange(len(out) + 1)
        r = rng.random()
        if r < 0.4:
            out[pos:pos] = rng.choice(tokens)
        elif r < 0.7:
            del out[pos : pos + rng.randint(1, 8)]
        elif out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
    return bytes(out)


def yaml_cases(rng: random.Random, tmp: Path) -> Iterator[Callable[[], object]]:
    from reports.sweep import load_sweep

    files = sorted(EXAMPLE_DIR.glob("*.yaml")) + sorted(PRESET_DIR.glob("*.yaml"))
    # Sweeps name their workload relative to themselves: mutate them beside copies of the examples.
    for src in EXAMPLE_DIR.glob("*.yaml"):
        (tmp / src.name).write_bytes(src.read_bytes())
    while True:
        src = rng.choice(files)
        path = tmp / f".fuzz-{src.name}"
        path.write_bytes(mutate(src.read_bytes(), rng, YAML_TOKENS, 4))
        if src.parent == PRESET_DIR:
            yield lambda p=path: load_hardware(p)
        elif src.name.startswith("sweep_"):
            yield lambda p=path: load_sweep(p)
        else:
            yield lambda p=path: load_workload(p)


def mtx_cases(rng: random.Random, tmp: Path) -> Iterator[Callable[[], object]]:
    from workloads.matrices import resolve_matrix

    while True:
        data = mutate(rng.choice(MTX_BASES), rng, MTX_TOKENS)
        name = "m.mtx.gz" if rng.random() < 0.2 else "m.mtx"
        (tmp / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        yield lambda n=name: resolve_matrix(n, {}, 0, tmp)


def npy_cases(rng: random.Random, tmp: Path) -> Iterator[Callable[[], object]]:
    from workloads.generators import attention as A

    flex = A.block_sparse_mask(1, 1, 64, 64, 16, 0.5, seed=1, causal=False).to_flex()
    buffers = {}
    for kind, write in (("npz", lambda f: np.savez(f, **flex)),
                        ("npy", lambda f: np.save(f, np.zeros((1, 2, 64, 16), np.float32)))):
        buffers[kind] = io.BytesIO()
        write(buffers[kind])
    while True:
        kind = rng.choice(["npz", "npy"])
        path = tmp / f"f.{kind}"
        path.write_bytes(mutate(buffers[kind].getvalue(), rng, [b"\0", b"\xff" * 4, b"(", b","]))
        if kind == "npz":
            yield lambda p=path: A.load_npz(str(p), 1, 1, 64, 64, 16, causal=False)
        else:
            yield lambda p=path: A._open_array(str(p), "q", "fiu", (1, 2, 64, 16))


def _real_outputs(tmp: Path) -> tuple[bytes, bytes]:
    """A results store of a 4-point tiny sweep and a results.json of one run, made once."""
    from archsim.cli import main as archsim_main
    from reports.dse import run_sweep
    from reports.sweep import load_sweep

    sweep = tmp / "store-sweep.yaml"
    sweep.write_text(f"version: 1\nname: fuzz\nworkload: {EXAMPLE_DIR / 'tiny_gemm.yaml'}\n"
                     "axes:\n  - {key: hardware.array.rows, values: [2, 4]}\n"
                     "  - {key: hardware.array.cols, values: [2, 4]}\n"
                     "objectives: [cycles]\nstrategy: {kind: grid}\n")
    outcome = run_sweep(load_sweep(sweep, area_available=False), tmp / "store-out", workers=1)
    with contextlib.redirect_stdout(io.StringIO()):
        archsim_main(["run", str(EXAMPLE_DIR / "tiny_gemm.yaml"), "--out", str(tmp / "run"),
                      "--quiet"])
    return outcome.store_path.read_bytes(), (tmp / "run" / "results.json").read_bytes()


def _damage_db(data: bytes, rng: random.Random) -> bytes:
    """A SQLite file damaged the ways disks and copies damage them."""
    page = 4096
    r = rng.random()
    if r < 0.3:  # truncated, often mid-page
        return data[: rng.randrange(len(data) + 1)]
    if r < 0.5:  # a page dropped
        i = rng.randrange(max(1, len(data) // page))
        return data[: i * page] + data[(i + 1) * page:]
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):  # bytes flipped, the header included
        pos = rng.randrange(min(len(out), 200)) if rng.random() < 0.3 else rng.randrange(len(out))
        out[pos] = rng.randrange(256)
    return bytes(out)


def store_cases(rng: random.Random, tmp: Path) -> Iterator[Callable[[], object]]:
    from reports.inputs import read_inputs

    db, results = _real_outputs(tmp)
    while True:
        if rng.random() < 0.7:
            path = tmp / "damaged.db"
            path.write_bytes(_damage_db(db, rng))
        else:
            path = tmp / "damaged.json"
            path.write_bytes(mutate(results, rng, [b"{", b"}", b"NaN", b"null", b'"', b"\0"], 6))
        yield lambda p=path: read_inputs([p])


FAMILIES = {"yaml": yaml_cases, "mtx": mtx_cases, "npy": npy_cases, "store": store_cases}


def run(cases: int, seed: int, slow_s: float = 10.0, out=sys.stdout) -> dict[str, int]:
    """Run ``cases`` cases spread over the families; returns the failure counts."""
    counts = {"cases": 0, "tracebacks": 0, "multi_line": 0, "slow": 0}
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        streams = {name: make(random.Random(f"{seed}-{name}"), tmp)
                   for name, make in FAMILIES.items()}
        names = sorted(streams)
        for i in range(cases):
            name = names[i % len(names)]
            case = next(streams[name])
            began = time.perf_counter()
            try:
                case()
            except ArchsimError as exc:
                if "\n" in str(exc):
                    counts["multi_line"] += 1
                    print(f"multi-line {name}: {str(exc)[:200]!r}", file=out)
            except Exception as exc:  # noqa: BLE001 - every other exception is the finding
                counts["tracebacks"] += 1
                where = traceback.extract_tb(exc.__traceback__)[-1]
                print(f"traceback {name}: {type(exc).__name__}: {str(exc)[:150]} "
                      f"({where.filename}:{where.lineno})", file=out)
            if time.perf_counter() - began > slow_s:
                counts["slow"] += 1
                print(f"slow {name}: {time.perf_counter() - began:.1f} s", file=out)
            counts["cases"] += 1
    counts["peak_rss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                     - start_rss) // 1024
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow", type=float, default=10.0, help="seconds that make a case slow")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    counts = run(args.cases, args.seed, args.slow)
    print(" ".join(f"{k}={v}" for k, v in counts.items()),
          f"wall_s={time.perf_counter() - began:.1f}")
    bad = counts["tracebacks"] + counts["multi_line"] + counts["slow"]
    return 1 if bad or counts["peak_rss_growth_mib"] > 1024 else 0


if __name__ == "__main__":
    sys.exit(main())
