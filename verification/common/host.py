"""The host side of ``accel_top``: the ``instr`` stream, the ``start`` pulse, ``busy``.

Like the memory model, the driver is plain Python with a two-phase cycle interface
(:meth:`HostDriver.drive` then :meth:`HostDriver.sample`), so the cocotb loop is the only code
that touches the simulator. It writes every word of the program, in program order, one per
transfer; then pulses ``start`` for one cycle; the program's cycle 0 is the next cycle
(docs/isa.md), and the driver counts until ``busy`` falls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dataflows.isa import encode
from dataflows.program import Program

__all__ = ["HostInputs", "HostDriver"]


@dataclass(slots=True)
class HostInputs:
    """What the host drives in one cycle."""

    instr_valid: bool = False
    instr_payload: int = 0
    start: bool = False


class HostDriver:
    """Loads a program through ``instr``, starts it and times it by ``busy``.

    Parameters
    ----------
    program
        Its instructions are encoded with :func:`dataflows.isa.encode`.
    gaps
        Probability that the host idles for a cycle before offering the next word (random
        backpressure on the host side); 0 writes one word per cycle.
    seed
        Seeds the gaps.

    Attributes
    ----------
    start_cycle
        Absolute cycle in which ``start`` was high (program cycle 0 is the next one).
    busy_cycles
        Program cycles during which ``busy`` was high: ``busy`` is expected high from cycle 0
        until the cycle in which the program ends.
    """

    def __init__(self, program: Program, gaps: float = 0.0, seed: int = 0) -> None:
        self.words = [encode(instr) for instr in program.instrs]
        self.gaps = gaps
        self._rng = random.Random(seed)
        self._next = 0
        self._offered = False
        self.start_cycle: int | None = None
        self.busy_cycles: int | None = None

    @property
    def words_taken(self) -> int:
        return self._next

    @property
    def loaded(self) -> bool:
        return self._next == len(self.words)

    @property
    def done(self) -> bool:
        """The program has run: ``busy`` fell after the start."""
        return self.busy_cycles is not None

    def program_cycle(self, cycle: int) -> int:
        """Absolute testbench cycle → program cycle (0 = the cycle after ``start``)."""
        if self.start_cycle is None:
            raise RuntimeError("the program has not been started")
        return cycle - self.start_cycle - 1

    def drive(self, cycle: int) -> HostInputs:
        if not self.loaded:
            # Stream rule 2: a word once offered stays offered until taken.
            if self._offered or self.gaps == 0.0 or self._rng.random() >= self.gaps:
                self._offered = True
                return HostInputs(True, self.words[self._next])
            return HostInputs()
        if self.start_cycle is None:
            self.start_cycle = cycle
            return HostInputs(start=True)
        return HostInputs()

    def sample(self, cycle: int, instr_ready: bool, busy: bool) -> None:
        if not self.loaded:
            if self._offered and instr_ready:
                self._next += 1
                self._offered = False
            return
        if self.start_cycle is None or cycle == self.start_cycle or self.done:
            return
        # busy is expected high from program cycle 0 up to the end: the first low cycle ends it.
        if not busy:
            self.busy_cycles = self.program_cycle(cycle)
