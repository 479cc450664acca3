"""Simulator-independent testbench of the SpGEMM engine: stimulus, DMA timing, checks.

:class:`EngineBench` is stepped once per clock cycle by a thin adapter (amaranth.sim in
``tests/rtl/test_spgemm_engine.py``, cocotb in ``spgemm_engine_tests.py``): ``inputs(t)`` gives
the raw input values for cycle ``t``; ``observe(t, outputs)`` takes the DUT's settled outputs of
that cycle, and every handshake completes at the edge that closes the cycle.

Around the engine it plays the memory side exactly as the hash dataflow's program does on the
SimPy model (``archsim.spgemm``, ``dataflows.spgemm_program``): one DMA serving transfers in
program order, each ``transfer_cycles(bytes)`` long; chunk ``c``'s A and B data are offered from
the cycle its load completes; the load of chunk ``c + 2`` starts when the engine finishes chunk
``c`` (the cycle after the last C beat of its last row), right after that chunk's store; spilled products
are offered back ``spill_readback_cycles`` after a pass's drain. What the engine produced (C
entries, spilled products, row ends) comes from the DUT: the write-back sizes use the observed
counts, so any difference in the engine's behaviour shows up in the cycle counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data

from archsim.spgemm import engine_spans, run_tables
from dataflows import spgemm as mapping
from dataflows.spgemm import SpGEMMProblem, partial_bytes, transfer_cycles
from rtl.spgemm import (
    a_element_layout,
    b_beat_layout,
    c_beat_layout,
    spill_in_layout,
    spill_out_layout,
)
from workloads.arith import ceil_div

__all__ = ["EngineBench", "Expected", "expected", "INPUTS", "OUTPUTS"]

#: Port paths the adapters drive and sample (signature paths joined by "__" in Verilog).
INPUTS = ("a__valid", "a__payload", "b__valid", "b__payload", "spill_in__valid",
          "spill_in__payload", "c__ready")
OUTPUTS = ("a__ready", "b__ready", "spill_in__ready", "c__valid", "c__payload",
           "spill_out__valid", "spill_out__payload")

_NEVER = float("inf")


@dataclass
class Expected:
    """What the model predicts: total cycles, per-row end cycles, C in drain order."""

    cycles: int
    row_end: np.ndarray
    c_rows: np.ndarray
    c_cols: np.ndarray
    c_values: np.ndarray
    spilled: int


def expected(problem: SpGEMMProblem) -> Expected:
    """The SimPy model's hash dataflow for ``problem``, with per-row timestamps."""
    trace = mapping.hash_row_trace(problem, functional=True)
    (table,) = mapping.map_hash(problem, trace)
    program, stats = run_tables([table], problem.hw, trace=True)
    row_end = np.zeros(problem.n_rows, dtype=np.int64)
    bounds = table.row_bounds
    for c, (start, _) in enumerate(engine_spans(program, stats)):
        r0, r1 = bounds[c], bounds[c + 1]
        row_end[r0:r1] = start + np.cumsum(trace.cycles[r0:r1])
    return Expected(stats.cycles, row_end, trace.c_rows, trace.c_cols, trace.c_values, trace.spilled)


@dataclass
class _Dram:
    """The one DRAM channel: transfers in issue order."""

    hw: object
    free: int = 0

    def issue(self, t: int, nbytes: int) -> int:
        """Issue a transfer in cycle ``t``; return the cycle it completes."""
        if nbytes <= 0:
            return t
        start = max(t, self.free)
        self.free = start + transfer_cycles(nbytes, self.hw)
        return self.free


@dataclass
class EngineBench:
    """One SpGEMM through the engine, cycle by cycle (see the module docstring)."""

    problem: SpGEMMProblem
    max_cycles: int = 1_000_000
    c_entries: list[tuple[int, int, int]] = field(default_factory=list)
    row_end: list[int] = field(default_factory=list)
    spilled: int = 0
    done_cycle: int | None = None

    def __post_init__(self) -> None:
        hw, pr = self.problem.hw, self.problem
        self.hw = hw
        self.layouts = {
            "a": a_element_layout(hw), "b": b_beat_layout(hw), "spill_in": spill_in_layout(hw),
            "spill_out": spill_out_layout(hw), "c": c_beat_layout(hw),
        }
        (table,) = mapping.map_hash(pr, mapping.hash_row_trace(pr))
        self.bounds = [int(x) for x in table.row_bounds]
        self.fetch = [int(x) for x in table.fetch_total()]
        self.chunk_of_row = np.repeat(np.arange(len(self.bounds) - 1), np.diff(self.bounds))
        self.a_queue, self.b_queue = self._streams()
        self.dram = _Dram(hw)
        self.available = [_NEVER] * (len(self.bounds) - 1)
        for c in range(min(2, len(self.available))):
            self.available[c] = self.dram.issue(0, self.fetch[c])
        self.row = 0
        self.row_c = 0  # C entries of the current row
        self.chunk_c = 0  # C and spill bytes of the current chunk
        self.pass_spills: list[tuple[int, int]] = []
        self.spill_queue: list[int] = []
        self.spill_from = _NEVER
        self.last_end = 0

    # -- stimulus ----------------------------------------------------------------------------

    def _streams(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(chunk, packed payload) beats of A and of B, in stream order."""
        pr, hw = self.problem, self.hw
        p = hw.spgemm.multipliers
        a_beats, b_beats = [], []
        for i in range(pr.n_rows):
            chunk = int(self.chunk_of_row[i])
            lo, hi = int(pr.a.indptr[i]), int(pr.a.indptr[i + 1])
            if lo == hi:
                a_beats.append((chunk, self._pack("a", col=0, value=0, last=1, empty=1)))
                continue
            for e in range(lo, hi):
                k = int(pr.a.indices[e])
                a_beats.append((chunk, self._pack("a", col=k, value=int(pr.a.data[e]),
                                                  last=int(e == hi - 1), empty=0)))
                cols = pr.b.indices[pr.b.indptr[k] : pr.b.indptr[k + 1]]
                vals = pr.b.data[pr.b.indptr[k] : pr.b.indptr[k + 1]]
                n_beats = max(1, ceil_div(len(cols), p))
                for q in range(n_beats):
                    cs, vs = cols[q * p : (q + 1) * p], vals[q * p : (q + 1) * p]
                    b_beats.append((chunk, self._pack(
                        "b", cols=_lanes(cs, p), values=_lanes(vs, p), count=len(cs),
                        last=int(q == n_beats - 1))))
        a_beats.reverse()  # popped from the end
        b_beats.reverse()
        return a_beats, b_beats

    def _pack(self, port: str, **fields) -> int:
        return self.layouts[port].const(fields).as_bits()

    def inputs(self, t: int) -> dict[str, int]:
        """Input values for cycle ``t``."""
        a_ok = bool(self.a_queue) and self.available[self.a_queue[-1][0]] <= t
        b_ok = bool(self.b_queue) and self.available[self.b_queue[-1][0]] <= t
        s_ok = bool(self.spill_queue) and self.spill_from <= t
        return {
            "a__valid": int(a_ok), "a__payload": self.a_queue[-1][1] if a_ok else 0,
            "b__valid": int(b_ok), "b__payload": self.b_queue[-1][1] if b_ok else 0,
            "spill_in__valid": int(s_ok),
            "spill_in__payload": self.spill_queue[-1] if s_ok else 0,
            "c__ready": 1,
        }

    # -- observation -------------------------------------------------------------------------

    def observe(self, t: int, inp: dict[str, int], out: dict[str, int]) -> None:
        """Handshakes of cycle ``t`` (they complete at the edge closing it)."""
        if t >= self.max_cycles:
            raise AssertionError(f"the engine did not finish within {self.max_cycles} cycles")
        if inp["a__valid"] and out["a__ready"]:
            self.a_queue.pop()
        if inp["b__valid"] and out["b__ready"]:
            self.b_queue.pop()
        if inp["spill_in__valid"] and out["spill_in__ready"]:
            self.spill_queue.pop()
        if out["spill_out__valid"]:
            beat = data.Const(self.layouts["spill_out"], out["spill_out__payload"])
            for lane in range(self.hw.spgemm.hash_banks):
                if beat.valid >> lane & 1:
                    self.pass_spills.append((beat.cols[lane], beat.values[lane]))
        if out["c__valid"] and inp["c__ready"]:
            self._c_beat(t, data.Const(self.layouts["c"], out["c__payload"]))

    def _c_beat(self, t: int, beat) -> None:
        for lane in range(self.hw.spgemm.hash_banks):
            if beat.valid >> lane & 1:
                self.c_entries.append((self.row, beat.cols[lane], beat.values[lane]))
                self.row_c += 1
        if beat.pass_end and not beat.last:
            self._spill_pass(t)
        if beat.last:
            self._row_done(t)

    def _spill_pass(self, t: int) -> None:
        """A drain ended with products spilled: offer them back after the round trip."""
        spills, p = self.pass_spills, self.hw.spgemm.multipliers
        if not spills:
            raise AssertionError(f"cycle {t}: row {self.row} ended a pass without spilling")
        self.spilled += len(spills)
        self.chunk_c += 2 * len(spills) * partial_bytes(self.hw)  # written, then read back
        beats = []
        for q in range(0, len(spills), p):
            group = spills[q : q + p]
            beats.append(self._pack(
                "spill_in", cols=_lanes([c for c, _ in group], p),
                values=_lanes([v for _, v in group], p), count=len(group),
                last=int(q + p >= len(spills))))
        self.spill_queue = beats[::-1]
        self.spill_from = t + 1 + int(mapping.spill_readback_cycles(len(spills), self.hw))
        self.pass_spills = []

    def _row_done(self, t: int) -> None:
        if self.pass_spills:
            raise AssertionError(f"cycle {t}: row {self.row} ended with unreturned spills")
        self.row_end.append(t + 1)
        self.chunk_c += self.hw.spgemm.index_bytes + self.row_c * partial_bytes(self.hw)
        self.row_c = 0
        self.row += 1
        chunk = int(self.chunk_of_row[self.row - 1])
        if self.row == self.bounds[chunk + 1]:  # the engine finished this chunk
            self.last_end = self.dram.issue(t + 1, self.chunk_c)
            self.chunk_c = 0
            if chunk + 2 < len(self.available):
                self.available[chunk + 2] = self.dram.issue(t + 1, self.fetch[chunk + 2])
        if self.row == self.problem.n_rows:
            self.done_cycle = max(t + 1, self.last_end)

    @property
    def finished(self) -> bool:
        return self.done_cycle is not None

    # -- checks ------------------------------------------------------------------------------

    def check(self, want: Expected) -> None:
        """C values and drain order, per-row end cycles and total cycles against the model."""
        got = np.array(self.c_entries, dtype=np.int64).reshape(-1, 3)
        ref = np.stack([want.c_rows, want.c_cols, want.c_values], axis=1)
        if got.shape != ref.shape or not np.array_equal(got, ref):
            raise AssertionError(_first_difference(got, ref))
        rows = np.array(self.row_end)
        if not np.array_equal(rows, want.row_end):
            i = int(np.flatnonzero(rows != want.row_end)[0])
            raise AssertionError(
                f"row {i} of C ended in cycle {rows[i]} on the RTL; archsim predicts "
                f"{want.row_end[i]} (tolerance 0)"
            )
        if self.done_cycle != want.cycles:
            raise AssertionError(
                f"RTL took {self.done_cycle} cycles; archsim predicts {want.cycles} (tolerance 0)"
            )


def _lanes(values, width: int) -> list[int]:
    out = [int(v) for v in values]
    return out + [0] * (width - len(out))


def _first_difference(got: np.ndarray, ref: np.ndarray) -> str:
    n = min(len(got), len(ref))
    for i in range(n):
        if not np.array_equal(got[i], ref[i]):
            return (f"C entry {i} (row, col, value): RTL {tuple(got[i])}, model {tuple(ref[i])}; "
                    f"{len(got)} vs {len(ref)} entries")
    return f"RTL emitted {len(got)} C entries, the model {len(ref)}"
