"""The hardware configurations verification runs by default (CI and benchmarks).

Each is a shipped preset plus ``--set``-style overrides, loaded through the same
:func:`workloads.load.load_hardware` users go through. ``tiny`` is the 4×4 preset as shipped.
``wide`` changes every parameter the RTL and the model must agree on: an 8×8 array, 16-bit
accumulators (products of 8-bit operands wrap), 16-byte DRAM beats with another latency, three
vector lanes, and buffers small enough that M is tiled too (ragged M tiles).
"""

from __future__ import annotations

from workloads.load import load_hardware
from workloads.spec import HardwareSpec

__all__ = ["CONFIGS", "load_config"]

CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tiny": ("tiny", ()),
    "wide": ("tiny", (
        "name=tiny-8x8",
        "array.rows=8",
        "array.cols=8",
        "acc_bits=16",
        "dram.bandwidth_bytes_per_cycle=16",
        "dram.latency_cycles=7",
        "vector_unit.lanes=3",
        "buffers.input_bytes=512",
        "buffers.accumulator_bytes=1024",
    )),
}
# The same two on the output-stationary array (docs/isa.md, "Output-stationary COMPUTE").
CONFIGS["tiny_os"] = ("tiny", ("name=tiny-os", "array.dataflow=output_stationary"))
CONFIGS["wide_os"] = ("tiny", (*CONFIGS["wide"][1], "name=tiny-8x8-os",
                               "array.dataflow=output_stationary"))


def load_config(name: str) -> HardwareSpec:
    """The :class:`HardwareSpec` of a named configuration."""
    preset, overrides = CONFIGS[name]
    return load_hardware(preset, overrides=list(overrides))
