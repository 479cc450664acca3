"""The CI sample's convolution-addressing programs (verification/top/test_top.py, CONV_SEEDS)
cover what the address mode and the scheduler's patches can do; pinned here without a
simulator, so a change to the draws cannot silently narrow the sample."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dataflows.isa import Op, conv_rows
from verification.configs import load_config
from verification.golden import prepare
from verification.programs import CONV, random_case


def _conv_seeds() -> dict[str, list[int]]:
    pytest.importorskip("cocotb")
    path = Path(__file__).parents[2] / "verification" / "top" / "test_top.py"
    spec = importlib.util.spec_from_file_location("_top_sample", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONV_SEEDS


def _features(case) -> set[str]:
    task, t = case.tasks[0], case.tilings[0]
    conv = task.conv
    image = conv.out_h * conv.out_w
    computes = [i for i in case.program.instrs if i.op == Op.COMPUTE]
    assert (t.conv or t.conv_b or t.conv_t) and computes
    assert all(i.conv is not None for i in computes)
    assert all(i.conv.b == t.conv_b and i.conv.t == t.conv_t for i in computes)
    if t.conv_t:
        chunks = {i.m // (conv.kh * conv.kw * case.hw.array.rows) for i in computes}
        return {"transposed", f"{conv.kh}x{conv.kw}"} | {f"{c} chunks" for c in chunks}
    padded = any(None in conv_rows(i.conv, i.b_row if i.conv.b else i.a_row,
                                   i.k if i.conv.b else i.m) for i in computes)
    if t.conv_b:
        mid_line = any(i.conv.ow0 for i in computes)
        return {"wg", f"{conv.kh}x{conv.kw}"} | ({"padding"} if padded else set()) | (
            {"mid-line"} if mid_line else set())
    grouped = {f"{i.conv.group} offsets" for i in computes if i.conv.group > 1}
    return grouped | {f"{conv.kh}x{conv.kw}", f"stride {conv.stride}", "sparse" if t.sparse else "dense",
            "band" if t.tm < image else ("images" if t.tm > image else "image"),
            "kernel offsets" if t.kb < conv.kh * conv.kw else "channel chunks",
            "double" if case.passes.double_buffering else "single", task.phase} | (
                {"padding"} if padded else set())


def test_the_ci_conv_seeds_cover_the_address_mode():
    seen: set[str] = set()
    configs = {"tiny": "tiny", "tiny-8x8": "wide"}
    for name, seeds in _conv_seeds().items():
        hw = load_config(configs[name])
        for seed in seeds:
            case = random_case(hw, seed, (CONV,))
            prepare(case)  # golden = math, no hazard, every tile fits its slot
            seen |= _features(case)
    assert seen >= {"3x3", "5x5", "stride 1", "stride 2", "padding", "sparse", "dense", "band",
                    "images", "kernel offsets", "channel chunks", "single", "bp", "wg",
                    "mid-line", "2 offsets", "4 offsets", "transposed", "2 chunks"}, seen
