"""The FPGA the RTL flow targets: SAT's VCU1525 board carries a Xilinx XCVU9P.

One home for the device's capacities, read by the synthesis flow (``rtl.synth``: a design's share
of the device in ``resources.json``) and by the DSE area model (``reports.area``: a point that
does not fit is infeasible). Figures from the UltraScale+ datasheet (REFERENCE.md, section 1);
BRAM in RAMB36 equivalents.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["DEVICE_NAME", "DEVICE_CAPACITY", "ON_CHIP_MEMORY_BYTES", "device_shares", "lut_sites"]

DEVICE_NAME = "XCVU9P"
#: Resources of the device, keyed as ``rtl.synth.RESOURCE_KINDS`` counts them.
DEVICE_CAPACITY = MappingProxyType({"LUT": 1_182_240, "FF": 2_364_480, "DSP": 6_840,
                                    "BRAM36": 2_160, "URAM": 960})

#: Bytes the device's block memories hold: 36 Kib per RAMB36 and 288 Kib per URAM, parity
#: bits included (about 43 MiB). Buffers larger than this cannot be built on the device.
ON_CHIP_MEMORY_BYTES = (DEVICE_CAPACITY["BRAM36"] * 36 + DEVICE_CAPACITY["URAM"] * 288) * 1024 // 8


def lut_sites(counts: dict[str, float]) -> float:
    """LUT sites a design occupies, as Vivado's "CLB LUTs" counts them: logic LUTs plus LUTs
    used as distributed RAM (LUTRAM) and as shift registers (SRL)."""
    return counts.get("LUT", 0) + counts.get("LUTRAM", 0) + counts.get("SRL", 0)


def device_shares(counts: dict[str, float]) -> dict[str, float]:
    """Fraction of the device each counted resource takes (LUT: its sites, :func:`lut_sites`)."""
    used = {**counts, "LUT": lut_sites(counts)}
    return {kind: used.get(kind, 0) / cap for kind, cap in DEVICE_CAPACITY.items()}
