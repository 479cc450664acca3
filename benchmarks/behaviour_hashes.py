"""Fingerprint archsim's observable behaviour, to show a refactor changed none of it.

Prints one SHA-256 (first 16 hex digits) per line:

* ``program <example>``: every segment program ``dataflows.schedule`` builds for a shipped
  example workload — encoded instruction words with their waits zeroed, DRAM tensors and repeat
  counts — and ``waits <example>``: the waits and tags of those instructions;
* ``case <config> <kind> <seeds>``: the random verification programs of ``verification.programs``
  (GEMM kinds and attention) — instruction words (waits zeroed), input image, the golden model's
  expected image (bytes and care bits) and the SimPy model's per-instruction trace — and
  ``case-waits``: their waits and tags;
* ``results <example> <file>``: every file ``archsim run`` writes for the example.

Run it before and after a change and diff the output::

    python benchmarks/behaviour_hashes.py > before.txt
    ... change ...
    python benchmarks/behaviour_hashes.py > after.txt && diff before.txt after.txt

``--quick`` skips the ``archsim run`` outputs (the slow part).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from archsim.cli import main as archsim_main
from dataflows.isa import WORD_BITS, encode
from dataflows.scheduler import schedule
from verification.configs import load_config
from verification.golden import prepare
from verification.programs import ATTENTION, random_case
from workloads.load import load_workload

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "workloads" / "examples").glob("*.yaml")
                  if not p.stem.startswith("sweep"))
GEMM_SEEDS = range(60)
ATTENTION_SEEDS = range(40)


def _digest(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
    return h.hexdigest()[:16]


def _program_parts(program):
    """What the program does (waits aside): instruction words and DRAM tensors."""
    yield b"".join(encode(replace(i, wait=(0, 0, 0))).to_bytes(WORD_BITS // 8, "little")
                   for i in program.instrs)
    yield tuple(sorted((t.name, t.addr, t.rows, t.cols, t.elem_bytes, t.stride, t.fmt, t.nbytes)
                       for t in program.tensors.values()))


def _wait_parts(program):
    """How the program synchronizes its units, and how its statistics are split."""
    yield tuple(i.wait for i in program.instrs)
    yield tuple(program.tags)


def program_hashes() -> None:
    for path in EXAMPLES:
        workload = load_workload(path)
        if all(op.op == "spgemm" for op in workload.operations):
            continue
        sched = schedule(workload)
        parts, waits = [], []
        for segment in sched.segments:
            parts.append(segment.repeat)
            parts.extend(_program_parts(segment.program))
            waits.extend(_wait_parts(segment.program))
        print(f"program {path.stem} ({len(sched.segments)} segments): {_digest(parts)}")
        print(f"waits {path.stem}: {_digest(waits)}")


def _case_parts(prepared):
    yield from _program_parts(prepared.case.program)
    yield prepared.image.data.tobytes()
    yield prepared.expected.data.tobytes()
    yield prepared.expected.care.tobytes()
    yield tuple(prepared.trace)
    yield prepared.cycles


def case_hashes() -> None:
    for config in ("tiny", "wide"):
        hw = load_config(config)
        for kinds, seeds in ((None, GEMM_SEEDS), ((ATTENTION,), ATTENTION_SEEDS)):
            parts, waits = [], []
            for seed in seeds:
                prepared = prepare(random_case(hw, seed, kinds))
                parts.extend(_case_parts(prepared))
                waits.extend(_wait_parts(prepared.case.program))
            label = f"{config} {'mixed' if kinds is None else kinds[0]} {seeds.start}-{seeds.stop - 1}"
            print(f"case {label}: {_digest(parts)}")
            print(f"case-waits {label}: {_digest(waits)}")


def results_hashes() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for path in EXAMPLES:
            out = Path(tmp) / path.stem
            with contextlib.redirect_stdout(io.StringIO()):
                code = archsim_main(["run", str(path), "--out", str(out), "--quiet"])
            files = sorted(out.iterdir()) if out.exists() else []
            for f in files:
                print(f"results {path.stem} {f.name}: {_digest([f.read_bytes()])}")
            if code:
                print(f"results {path.stem}: exit {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the archsim run outputs")
    args = parser.parse_args()
    np.seterr(all="ignore")
    program_hashes()
    case_hashes()
    if not args.quick:
        results_hashes()


if __name__ == "__main__":
    main()
