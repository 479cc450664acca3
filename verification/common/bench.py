"""The cocotb side: one loop per clock cycle binding the host driver and the memory model to a DUT.

Each cycle the loop wakes on the rising edge that opens it, drives the DUT's inputs for the
cycle (host words, ``start``, memory data and ready/valid), then waits for ``ReadOnly`` and
samples the DUT's settled outputs: every handshake is decided on values that are final for the
cycle, whatever the simulator's scheduling order, and completes at the edge that closes it. One
coroutine and two triggers per cycle keep the Python cost per simulated cycle low.

Only this module (and the cocotb test modules) imports cocotb; it runs inside the simulator.
"""

from __future__ import annotations

from cocotb.triggers import ReadOnly, RisingEdge

from verification.common.host import HostDriver
from verification.common.memory import MemoryModel, MemoryOutputs
from verification.common.monitor import match_dma
from verification.common.ports import ISSUE_PROBE, ISSUE_WIRES, PortMap
from verification.common.protocol import ProtocolError, StreamRule
from verification.common.scoreboard import ProgramResult, compare_timing, compare_values
from verification.golden import Prepared

__all__ = ["AccelBench", "IssueProbe", "ISSUE_PROBE"]

#: Cycles the testbench keeps watching after ``busy`` falls, for stray requests.
_DRAIN_CYCLES = 4
#: Cycles after ``busy`` falls within which the DUT must have taken every write response.
_RESPONSE_CYCLES = 64


class _Wire:
    """A DUT port with write de-duplication (a VPI write per cycle per port adds up)."""

    __slots__ = ("handle", "last")

    def __init__(self, handle) -> None:
        self.handle = handle
        self.last: int | None = None

    def set(self, value: int) -> None:
        if value != self.last:
            self.handle.value = value
            self.last = value

    def get(self) -> int:
        return int(self.handle.value)


class IssueProbe:
    """Watches one unit's issue interface inside the DUT: when its instructions start and end.

    Parameters
    ----------
    valid, ready, done
        Handles of the interface's ``instr__valid``, ``instr__ready`` and ``done`` wires.
    """

    def __init__(self, valid, ready, done) -> None:
        self.valid, self.ready, self.done = _Wire(valid), _Wire(ready), _Wire(done)
        self.starts: list[int] = []
        self.ends: list[int] = []

    @classmethod
    def find(cls, dut, path: str, prefix: str) -> IssueProbe | None:
        scope = getattr(dut, path, None)
        if scope is None:
            return None
        handles = [getattr(scope, f"{prefix}__{n}", None) for n in ISSUE_WIRES]
        return cls(*handles) if all(h is not None for h in handles) else None

    def clear(self) -> None:
        self.starts, self.ends = [], []

    def sample(self, cycle: int) -> None:
        if self.valid.get() and self.ready.get():
            self.starts.append(cycle)
        if self.done.get():
            self.ends.append(cycle + 1)


class AccelBench:
    """Runs programs on a DUT with the ``accel_top`` ports of docs/isa.md.

    Parameters
    ----------
    dut
        The cocotb handle of the top level (``clk`` and ``rst`` are Amaranth's defaults).
    ports
        Wire names and payload layouts (:mod:`verification.common.ports`).
    """

    def __init__(self, dut, ports: PortMap) -> None:
        self.dut, self.ports = dut, ports
        self._edge = RisingEdge(dut.clk)
        self._settled = ReadOnly()
        self.rst = _Wire(dut.rst)
        self.start = _Wire(dut.start)
        self.busy = _Wire(dut.busy)
        self.cycles = _Wire(dut.cycles)
        self._wires: dict[str, _Wire | None] = {}
        for name, port in ports.streams.items():
            for member, present in (("valid", port.has_valid), ("ready", port.has_ready),
                                    ("payload", port.width > 0)):
                handle = getattr(dut, port.wire(member), None) if present else None
                self._wires[f"{name}.{member}"] = _Wire(handle) if handle is not None else None
        self.cycle = 0
        path, prefixes = ISSUE_PROBE
        found = {unit: IssueProbe.find(dut, path, prefix) for unit, prefix in prefixes.items()}
        #: Per unit name, the probe of its issue interface; empty when the DUT has none.
        self.probes: dict[str, IssueProbe] = {u: p for u, p in found.items() if p is not None}

    def _set(self, name: str, value: int) -> None:
        wire = self._wires[name]
        if wire is not None:
            wire.set(value)

    def _get(self, name: str, default: int) -> int:
        wire = self._wires[name]
        return default if wire is None else wire.get()

    async def tick(self) -> None:
        """Advance to the next cycle (inputs may be driven after this returns)."""
        await self._edge
        self.cycle += 1

    async def reset(self, cycles: int = 2) -> None:
        """Hold the synchronous reset for ``cycles`` cycles with every input idle."""
        self.rst.set(1)
        for name in ("instr.valid", "mem_rd_data.valid", "mem_wr_resp.valid",
                     "mem_wr_resp.payload", "mem_rd_req.ready", "mem_wr_req.ready",
                     "mem_wr_data.ready"):
            self._set(name, 0)
        self.start.set(0)
        for _ in range(cycles):
            await self.tick()
        self.rst.set(0)

    def _outputs(self, cycle: int, rules: dict[str, StreamRule], mem_in) -> MemoryOutputs:
        ports = self.ports
        out = MemoryOutputs()
        out.rd_data_ready = bool(self._get("mem_rd_data.ready", 1))
        out.wr_resp_ready = bool(self._get("mem_wr_resp.ready", 1))
        out.rd_req_valid = bool(self._get("mem_rd_req.valid", 1))
        payload = self._get("mem_rd_req.payload", 0) if out.rd_req_valid else 0
        rules["mem_rd_req"].check(cycle, out.rd_req_valid, mem_in.rd_req_ready, payload)
        if out.rd_req_valid:
            f = ports["mem_rd_req"].unpack(payload)
            out.rd_req_addr, out.rd_req_beats = f["addr"], f["beats"]
        out.wr_req_valid = bool(self._get("mem_wr_req.valid", 1))
        payload = self._get("mem_wr_req.payload", 0) if out.wr_req_valid else 0
        rules["mem_wr_req"].check(cycle, out.wr_req_valid, mem_in.wr_req_ready, payload)
        if out.wr_req_valid:
            f = ports["mem_wr_req"].unpack(payload)
            out.wr_req_addr, out.wr_req_beats = f["addr"], f["beats"]
        out.wr_data_valid = bool(self._get("mem_wr_data.valid", 1))
        payload = self._get("mem_wr_data.payload", 0) if out.wr_data_valid else 0
        rules["mem_wr_data"].check(cycle, out.wr_data_valid, mem_in.wr_data_ready, payload)
        if out.wr_data_valid:
            f = ports["mem_wr_data"].unpack(payload)
            out.wr_data, out.wr_strb = f["data"], f["strb"]
        return out

    def _drive_memory(self, mem_in) -> None:
        self._set("mem_rd_req.ready", int(mem_in.rd_req_ready))
        self._set("mem_wr_req.ready", int(mem_in.wr_req_ready))
        self._set("mem_wr_data.ready", int(mem_in.wr_data_ready))
        self._set("mem_wr_resp.valid", int(mem_in.wr_resp_valid))
        self._set("mem_rd_data.valid", int(mem_in.rd_data_valid))
        if mem_in.rd_data_valid:
            self._set("mem_rd_data.payload", self.ports["mem_rd_data"].pack(data=mem_in.rd_data))

    async def run_case(self, prepared: Prepared, backpressure: float = 0.0,
                       reset: bool = True) -> ProgramResult:
        """Run one program and judge it (values always; cycles without backpressure).

        Parameters
        ----------
        prepared
            The case, its input image (copied, not modified), the golden image after it and
            the SimPy model's timing.
        backpressure
            Probability of withholding each memory ready/valid (and host word) per cycle.
        reset
            Reset the DUT first; otherwise the program follows the previous one directly, as a
            host would run segment after segment.
        """
        case = prepared.case
        hw, program = case.hw, case.program
        result = ProgramResult(case.seed, case.kind, hw.name, case.description,
                               len(program.instrs), prepared.cycles, backpressure > 0)
        mem = MemoryModel(prepared.image.data.copy(), hw, backpressure, seed=case.seed)
        host = HostDriver(program, gaps=backpressure, seed=case.seed + 1)
        rules = {name: StreamRule(name) for name in ("mem_rd_req", "mem_wr_req", "mem_wr_data")}
        for probe in self.probes.values():
            probe.clear()
        if reset:
            await self.reset()
        # Generous: a correct RTL finishes in exactly prepared.cycles (or a bounded stretch of
        # it under backpressure); a hung one must still end the test with a message.
        limit = prepared.cycles * (20 if backpressure else 2) + 1000
        load_limit = self.cycle + 20 * len(host.words) + 100
        try:
            await self._loop(host, mem, rules, limit, load_limit)
        except ProtocolError as exc:
            result.protocol_errors.append(str(exc))
        except TimeoutError as exc:
            result.error = str(exc)
        # The loop ends in the read-only phase; leave the DUT writable for whoever comes next.
        await self.tick()
        result.busy_cycles = host.busy_cycles
        if host.done:
            result.rtl_cycles = self.cycles.get()
            origin = host.start_cycle + 1
            responses = [r.response for r in mem.requests if r.kind == "wr" and r.response >= 0]
            result.last_response = max(responses) - origin if responses else None
            observed = match_dma(program, hw, mem.requests, origin)
            result.protocol_errors.extend(observed.errors)
            if not backpressure:
                sources = {"memory ports": observed.timing}
                if self.probes:
                    timing, errors = self._probe_timing(program, origin)
                    sources["issue interface"] = timing
                    result.protocol_errors.extend(errors)
                timed, bad, examples = compare_timing(program, prepared.trace, sources)
                result.timed_instructions, result.timing_mismatches = timed, bad
                result.timing_examples = examples
        result.value_mismatches, result.value_examples = compare_values(
            case, prepared.expected, mem.data)
        return result

    def _probe_timing(self, program, origin: int) -> tuple[dict[int, tuple[int, int]], list[str]]:
        """Per instruction, (start, end) from the issue probes; errors for unmatched counts."""
        timing, errors = {}, []
        for unit, queue in program.per_unit().items():
            probe = self.probes.get(unit.name)
            if probe is None:
                continue
            if len(probe.starts) != len(queue) or len(probe.ends) != len(queue):
                errors.append(f"{unit.name} unit: {len(queue)} instructions, but "
                              f"{len(probe.starts)} started and {len(probe.ends)} ended")
            for index, start, end in zip(queue, probe.starts, probe.ends):
                timing[index] = (start - origin, end - origin)
        return timing, errors

    async def _loop(self, host: HostDriver, mem: MemoryModel, rules: dict[str, StreamRule],
                    limit: int, load_limit: int) -> None:
        drain = None
        while True:
            await self.tick()
            cycle = self.cycle
            h = host.drive(cycle)
            self._set("instr.valid", int(h.instr_valid))
            if h.instr_valid:
                self._set("instr.payload", h.instr_payload)
            self.start.set(int(h.start))
            mem_in = mem.drive(cycle)
            self._drive_memory(mem_in)
            await self._settled
            instr_ready = bool(self._get("instr.ready", 1)) if h.instr_valid else False
            busy = bool(self.busy.get())
            out = self._outputs(cycle, rules, mem_in)
            for probe in self.probes.values():
                probe.sample(cycle)
            mem.sample(cycle, out)
            was_done = host.done
            host.sample(cycle, instr_ready, busy)
            if host.start_cycle is None:
                if cycle > load_limit:
                    raise TimeoutError(
                        f"the DUT accepted only {host.words_taken} of {len(host.words)} instruction "
                        f"words in {load_limit} cycles")
                continue
            if host.done and not was_done:
                # Every beat must have moved before busy falls (the host may then read DRAM);
                # a write response may still be in flight, it carries no data.
                if mem.beats_outstanding:
                    raise ProtocolError(
                        f"program cycle {host.busy_cycles}: busy fell while memory beats were "
                        f"still outstanding")
                drain = cycle
                requests = len(mem.requests)
            if drain is not None:
                if busy:
                    raise ProtocolError(f"cycle {host.program_cycle(cycle)}: busy rose again "
                                        f"after the program ended")
                if len(mem.requests) != requests:
                    raise ProtocolError(f"cycle {host.program_cycle(cycle)}: a memory request "
                                        f"was issued after the program ended")
                if cycle >= drain + _DRAIN_CYCLES and mem.idle:
                    return
                if cycle >= drain + _RESPONSE_CYCLES:
                    raise ProtocolError(f"write responses were still not taken "
                                        f"{_RESPONSE_CYCLES} cycles after the program ended")
            elif host.program_cycle(cycle) > limit:
                raise TimeoutError(f"the DUT was still busy after {limit} cycles")
