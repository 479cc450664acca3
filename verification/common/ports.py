"""Where each top-level port and payload field is, as Amaranth flattens them into Verilog.

Amaranth names the wires of a stream member by path (``mem_rd_req__valid``,
``mem_rd_req__payload``) and packs a struct payload into one vector, first field at bit 0. The
field offsets are read from the built component's signature (:func:`port_map_of`), so the
testbench follows the RTL's ``rtl/layouts.py`` instead of restating it; :func:`default_port_map`
is the docs/isa.md order, for DUTs built without a signature at hand.

A :class:`PortMap` is plain data (JSON round-trip), because it travels from the pytest or CLI
process into the simulator process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from workloads.spec import HardwareSpec

__all__ = ["StreamPort", "PortMap", "default_port_map", "port_map_of", "STREAMS", "ISSUE_PROBE",
           "ISSUE_WIRES"]

#: The stream ports of ``accel_top`` (docs/isa.md) and their payload fields in docs order.
STREAMS: dict[str, tuple[str, ...]] = {
    "instr": (),
    "mem_rd_req": ("addr", "beats"),
    "mem_rd_data": ("data",),
    "mem_wr_req": ("addr", "beats"),
    "mem_wr_data": ("data", "strb"),
    "mem_wr_resp": (),
}

#: Where the controller's per-unit issue interfaces are (``rtl.layouts.IssueSignature``): the
#: instance name and, per unit, its member prefix. An instruction starts in the cycle its word
#: transfers (``instr`` valid and ready) and ends the cycle after the unit's ``done`` pulse.
ISSUE_PROBE: tuple[str, dict[str, str]] = ("controller", {"DMA": "dma", "PE": "pe", "VEC": "vec"})

#: The wires of one issue interface the testbench watches, after the unit's prefix.
ISSUE_WIRES: tuple[str, ...] = ("instr__valid", "instr__ready", "done")


@dataclass(frozen=True, slots=True)
class StreamPort:
    """One stream port: its wires and the ``(offset, width)`` of each payload field.

    ``has_valid``/``has_ready`` are False for ``always_valid``/``always_ready`` streams, whose
    wire is a constant Amaranth does not emit as a port.
    """

    name: str
    width: int
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)
    has_valid: bool = True
    has_ready: bool = True

    def wire(self, member: str) -> str:
        return f"{self.name}__{member}"

    def unpack(self, payload: int) -> dict[str, int]:
        return {k: (payload >> off) & ((1 << w) - 1) for k, (off, w) in self.fields.items()}

    def pack(self, **values: int) -> int:
        word = 0
        for k, (off, w) in self.fields.items():
            value = values.get(k, 0)
            if not 0 <= value < (1 << w):
                raise ValueError(f"{self.name}.{k}={value} does not fit in {w} bits")
            word |= value << off
        return word


@dataclass(frozen=True, slots=True)
class PortMap:
    """The stream ports of a DUT, keyed by name (see :data:`STREAMS`)."""

    streams: dict[str, StreamPort]

    def __getitem__(self, name: str) -> StreamPort:
        return self.streams[name]

    def to_json(self) -> dict:
        return {name: asdict(port) for name, port in self.streams.items()}

    @classmethod
    def from_json(cls, data: dict) -> PortMap:
        streams = {}
        for name, port in data.items():
            port = dict(port)
            port["fields"] = {k: tuple(v) for k, v in port["fields"].items()}
            streams[name] = StreamPort(**port)
        return cls(streams)


def default_port_map(hw: HardwareSpec) -> PortMap:
    """The ports with payload fields packed in docs/isa.md order from bit 0."""
    beat = hw.dram.bandwidth_bytes_per_cycle
    widths = {"addr": 32, "beats": 16, "data": 8 * beat, "strb": beat}
    streams = {}
    for name, names in STREAMS.items():
        fields, offset = {}, 0
        for f in names:
            fields[f] = (offset, widths[f])
            offset += widths[f]
        width = 256 if name == "instr" else offset
        streams[name] = StreamPort(name, width, fields)
    return PortMap(streams)


def port_map_of(component) -> PortMap:
    """The port map of an Amaranth component, read from its signature.

    Raises
    ------
    ValueError
        If a port of docs/isa.md is missing or a payload field is missing or misnamed.
    """
    from amaranth.hdl import Shape
    from amaranth.lib import data

    members = component.signature.members
    streams = {}
    for name, names in STREAMS.items():
        if name not in members:
            raise ValueError(f"the DUT has no {name!r} port (docs/isa.md lists it)")
        sig = members[name].signature
        shape = sig.members["payload"].shape
        fields = {}
        if isinstance(shape, data.Layout):
            for f, fld in shape:
                fields[f] = (fld.offset, Shape.cast(fld.shape).width)
        missing = set(names) - set(fields)
        if missing:
            raise ValueError(f"{name}.payload lacks field(s) {sorted(missing)}; it has {sorted(fields)}")
        streams[name] = StreamPort(name, Shape.cast(shape).width, fields,
                                   not sig.always_valid, not sig.always_ready)
    return PortMap(streams)
