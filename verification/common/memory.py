"""The DRAM model of the testbench: docs/isa.md memory timing, cycle by cycle.

One beat is ``W = dram.bandwidth_bytes_per_cycle`` bytes; a request accepted in cycle ``t``
delivers its first read beat (or accepts its first write beat) no earlier than
``t + dram.latency_cycles``, and the beats of successive requests follow each other back to back
at one per cycle through the single data channel. The same two ``HardwareSpec`` numbers drive
``dataflows.cost.dma_cycles``, which is why a DMA instruction that issues its first request in
the cycle it starts ends exactly ``latency + beats`` cycles later.

The model is plain Python with a two-phase cycle interface, so it is unit-tested without a
simulator: :meth:`MemoryModel.drive` gives the inputs of the DUT for a cycle, and
:meth:`MemoryModel.sample` takes the DUT's outputs of the same cycle (settled) and performs the
handshakes that complete at the clock edge ending it.

With ``backpressure`` the model withholds ``ready`` and ``valid`` at random (seeded) and delays
write responses: values must not change, but cycle counts do, so only values are compared then.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from verification.common.protocol import ProtocolError
from workloads.spec import HardwareSpec

__all__ = ["Request", "MemoryInputs", "MemoryOutputs", "MemoryModel"]


@dataclass(slots=True)
class Request:
    """One accepted request and when its beats moved (absolute cycles; -1: not yet)."""

    kind: str  # "rd" or "wr"
    addr: int
    beats: int
    accepted: int
    first_beat: int = -1
    last_beat: int = -1
    done_beats: int = 0
    response: int = -1  # write responses: cycle the DUT took it


@dataclass(slots=True)
class MemoryInputs:
    """What the memory drives into the DUT in one cycle."""

    rd_req_ready: bool = False
    rd_data_valid: bool = False
    rd_data: int = 0
    wr_req_ready: bool = False
    wr_data_ready: bool = False
    wr_resp_valid: bool = False


@dataclass(slots=True)
class MemoryOutputs:
    """The DUT's memory-side outputs of one cycle (payload fields already unpacked)."""

    rd_req_valid: bool = False
    rd_req_addr: int = 0
    rd_req_beats: int = 0
    rd_data_ready: bool = True
    wr_req_valid: bool = False
    wr_req_addr: int = 0
    wr_req_beats: int = 0
    wr_data_valid: bool = False
    wr_data: int = 0
    wr_strb: int = 0
    wr_resp_ready: bool = True


@dataclass
class MemoryModel:
    """A byte-addressed DRAM with docs/isa.md timing and optional random backpressure.

    Parameters
    ----------
    data
        The DRAM bytes (``uint8`` array); written in place by write beats.
    hw
        Supplies the beat width and the latency.
    backpressure
        Probability in [0, 1) that a ready/valid the memory could assert is withheld in a cycle
        (and that a due write response is held back one more cycle).
    seed
        Seeds the backpressure pattern, so a run replays exactly.

    Attributes
    ----------
    requests
        Every accepted request, in acceptance order, with its beat cycles.
    """

    data: np.ndarray
    hw: HardwareSpec
    backpressure: float = 0.0
    seed: int = 0
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.width = self.hw.dram.bandwidth_bytes_per_cycle
        self.latency = self.hw.dram.latency_cycles
        self._rng = random.Random(self.seed)
        self._channel: deque[Request] = deque()  # accepted, beats outstanding, in order
        self._channel_free = 0  # first cycle the data channel may carry the next beat
        self._responses: deque[tuple[int, Request]] = deque()  # (due cycle, write request)
        self._inputs = MemoryInputs()
        self._strobe_all = (1 << self.width) - 1

    @property
    def beats_outstanding(self) -> bool:
        """Some accepted request still has beats to move."""
        return bool(self._channel)

    @property
    def idle(self) -> bool:
        """No beat or response outstanding."""
        return not self._channel and not self._responses

    def _allow(self) -> bool:
        return self.backpressure == 0.0 or self._rng.random() >= self.backpressure

    def _beat_due(self, cycle: int) -> Request | None:
        head = self._channel[0] if self._channel else None
        if head is None:
            return None
        earliest = self._channel_free if head.done_beats else max(
            head.accepted + self.latency, self._channel_free)
        return head if cycle >= earliest else None

    def drive(self, cycle: int) -> MemoryInputs:
        """The memory's outputs (DUT inputs) in ``cycle``."""
        held = self._inputs
        inputs = MemoryInputs(rd_req_ready=self._allow(), wr_req_ready=self._allow())
        head = self._beat_due(cycle)
        if head is not None:
            if head.kind == "rd":
                # As a producer the memory obeys stream rule 2: a beat once offered stays
                # offered until taken, so backpressure only ever delays the first offer.
                if held.rd_data_valid or self._allow():
                    inputs.rd_data_valid = True
                    inputs.rd_data = self._read_beat(head)
            elif self._allow():
                inputs.wr_data_ready = True
        if self._responses and self._responses[0][0] <= cycle and (
                held.wr_resp_valid or self._allow()):
            inputs.wr_resp_valid = True
        self._inputs = inputs
        return inputs

    def sample(self, cycle: int, out: MemoryOutputs) -> None:
        """Complete the handshakes of ``cycle`` given the DUT's settled outputs."""
        inputs = self._inputs
        if inputs.rd_data_valid and out.rd_data_ready:
            self._advance(cycle)
            inputs.rd_data_valid = False  # taken: nothing is held into the next cycle
        if inputs.wr_data_ready and out.wr_data_valid:
            self._write_beat(self._channel[0], out.wr_data, out.wr_strb)
            self._advance(cycle)
        if inputs.wr_resp_valid and out.wr_resp_ready:
            _, request = self._responses.popleft()
            request.response = cycle
            inputs.wr_resp_valid = False
        # Requests accepted in this cycle queue behind earlier ones; a read request before a
        # write request of the same cycle (the DMA never issues both at once).
        if out.rd_req_valid and inputs.rd_req_ready:
            self._accept("rd", out.rd_req_addr, out.rd_req_beats, cycle)
        if out.wr_req_valid and inputs.wr_req_ready:
            self._accept("wr", out.wr_req_addr, out.wr_req_beats, cycle)

    def _accept(self, kind: str, addr: int, beats: int, cycle: int) -> None:
        if beats == 0:
            raise ProtocolError(f"cycle {cycle}: {kind} request at {addr:#x} for 0 beats")
        end = addr + beats * self.width
        if end > self.data.size:
            raise ProtocolError(
                f"cycle {cycle}: {kind} request [{addr:#x}, {end:#x}) beyond the "
                f"{self.data.size:#x}-byte DRAM image")
        request = Request(kind, addr, beats, cycle)
        self.requests.append(request)
        self._channel.append(request)

    def _read_beat(self, request: Request) -> int:
        start = request.addr + request.done_beats * self.width
        return int.from_bytes(self.data[start:start + self.width].tobytes(), "little")

    def _write_beat(self, request: Request, word: int, strb: int) -> None:
        start = request.addr + request.done_beats * self.width
        raw = word.to_bytes(self.width, "little")
        if strb == self._strobe_all:
            self.data[start:start + self.width] = np.frombuffer(raw, dtype=np.uint8)
            return
        for b in range(self.width):
            if strb >> b & 1:
                self.data[start + b] = raw[b]

    def _advance(self, cycle: int) -> None:
        request = self._channel[0]
        if request.done_beats == 0:
            request.first_beat = cycle
        request.done_beats += 1
        self._channel_free = cycle + 1
        if request.done_beats == request.beats:
            request.last_beat = cycle
            self._channel.popleft()
            if request.kind == "wr":
                # The response follows the last beat (docs/isa.md: "after its last beat was
                # written"): the earliest is the next cycle.
                self._responses.append((cycle + 1, request))
