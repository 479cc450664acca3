"""The golden interpreter's output-stationary COMPUTE (docs/isa.md, "Output-stationary COMPUTE")
against plain numpy: reduction chunks at their slot strides, a narrower last chunk, N:M
indices, accumulation; and the field checks of chunked COMPUTEs."""

from __future__ import annotations

import numpy as np
import pytest

from dataflows.isa import ConvAddress, Instr, Op, conv_rows
from dataflows.program import Program
from verification.dram import DramImage
from verification.errors import VerificationError
from verification.golden import run_golden
from workloads.load import load_hardware

TINY_OS = load_hardware("tiny", overrides=["array.dataflow=output_stationary"])
OUT = 2048


def _image(seed: int) -> tuple[DramImage, np.ndarray]:
    image = DramImage(4096)
    image.data[:] = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8)
    return image, image.data.view(np.int8).astype(np.int64)


def _sums(out: DramImage, rows: int, cols: int) -> np.ndarray:
    return out.data[OUT:OUT + rows * 16].view("<i4").reshape(rows, 4)[:, :cols]


def _program(loads, compute, rows, cols, previous=None):
    instrs = list(loads)
    if previous is not None:  # accumulate onto a first COMPUTE's sums
        instrs.append(previous)
    instrs += [compute, Instr(Op.STORE_C, addr=OUT, stride=16, rows=rows, cols=cols)]
    return Program(instrs, [0] * len(instrs))


def test_dense_chunks_sum_at_their_strides():
    image, raw = _image(1)
    m, cols, steps = 6, 3, (4, 4, 3)
    loads = [Instr(Op.LOAD_A, addr=100 * c, stride=4, rows=m, cols=4, a_row=1 + 7 * c)
             for c in range(3)]
    loads += [Instr(Op.LOAD_B, addr=1000 + 20 * c, stride=3, rows=4, cols=3, b_row=2 + 4 * c)
              for c in range(3)]
    compute = Instr(Op.COMPUTE, m=m, k=4, cols=cols, rows=m, a_row=1, b_row=2, chunks=3,
                    a_chunk_rows=7, b_chunk_rows=4, k_last=3, accumulate=True)
    first = Instr(Op.COMPUTE, m=m, k=2, cols=cols, rows=m, a_row=8, b_row=6)
    out = run_golden(_program(loads, compute, m, cols, first), TINY_OS, image)
    a = [raw[100 * c:100 * c + 4 * m].reshape(m, 4) for c in range(3)]
    w = [raw[1000 + 20 * c:1000 + 20 * c + 12].reshape(4, 3) for c in range(3)]
    want = a[1][:, :2] @ w[1][:2]  # the first COMPUTE: chunk 1's rows, k = 2
    want += sum(a[c][:, :k] @ w[c][:k] for c, k in enumerate(steps))
    assert np.array_equal(_sums(out, m, cols), want)


def test_nm_chunks_pick_activations_by_index():
    image, raw = _image(2)
    m, n, mm = 5, 2, 4
    loads = [Instr(Op.LOAD_A, addr=200 * c, stride=8, rows=m, cols=8, a_row=6 * c)
             for c in range(2)]
    loads += [Instr(Op.LOAD_B, addr=1000 + 40 * c, stride=5, rows=4, cols=4, b_row=4 * c,
                    nm_n=n, nm_m=mm) for c in range(2)]
    compute = Instr(Op.COMPUTE, m=m, k=4, cols=4, rows=m, nm_n=n, nm_m=mm, chunks=2,
                    a_chunk_rows=6, b_chunk_rows=4, k_last=2)
    out = run_golden(_program(loads, compute, m, 4), TINY_OS, image)
    want = np.zeros((m, 4), np.int64)
    for c, k in enumerate((4, 2)):
        a = raw[200 * c:200 * c + 8 * m].reshape(m, 8)
        rows = image.data[1000 + 40 * c:1000 + 40 * c + 20].reshape(4, 5)
        values = rows[:, :4].view(np.int8).astype(np.int64)
        idx = (rows[:, 4:5] >> (2 * np.arange(4))) & 3  # 2-bit indices, column j at bit 2j
        for r in range(k):
            for j in range(4):
                want[:, j] += values[r, j] * a[:, (r // n) * mm + idx[r, j]]
    assert np.array_equal(_sums(out, m, 4), want)


@pytest.mark.parametrize("hw, fields, message", [
    (TINY_OS, {"chunks": 2, "conv": ConvAddress(1, 2, 2, 2, 2, 0, 0, 0, 0)},
     "walks a kh x kw kernel"),
    (TINY_OS, {"conv": ConvAddress(1, 2, 2, 2, 2, 0, 0, 0, 0, group=2, kh=3, kw=3, kw0=1)},
     "not at a multiple of conv_group=2"),
    (TINY_OS, {"conv": ConvAddress(1, 2, 2, 2, 2, 0, 0, 0, 0, t=True, kh=3, kw=3)},
     "weight-stationary only"),
    (load_hardware("tiny"), {"chunks": 2}, "needs the output-stationary array"),
    (TINY_OS, {"chunks": 2, "k_last": 3, "nm_n": 2, "nm_m": 4}, "k_last=3 is not a multiple"),
    (TINY_OS, {"chunks": 2, "k_last": 5}, "k_last=5 exceeds"),
])
def test_chunk_fields_are_checked(hw, fields, message):
    program = Program([Instr(Op.COMPUTE, m=1, k=4, cols=4, rows=1, **fields)], [0])
    with pytest.raises(VerificationError, match=message):
        run_golden(program, hw, DramImage(64))


def test_weight_side_mode_goes_on_across_chunks():
    """conv_b: weight row (c, r) is the mode's pixel c·k + r (``isa.conv_rows`` of the whole
    reduction), zero in the padding; the A chunks sit a_chunk_rows apart."""
    image, raw = _image(3)
    m, k, steps = 3, 4, (4, 4, 2)
    conv = ConvAddress(stride=2, in_h=4, in_w=5, out_h=2, out_w=3, oh0=1, lo=0, dh=-1, dw=-1,
                       ow0=1, b=True)
    loads = [Instr(Op.LOAD_A, addr=64 * c, stride=4, rows=m, cols=4, a_row=5 * c)
             for c in range(3)]
    loads.append(Instr(Op.LOAD_B, addr=1000, stride=4, rows=40, cols=4, b_row=2))
    compute = Instr(Op.COMPUTE, m=m, k=k, cols=4, rows=m, b_row=2, conv=conv, chunks=3,
                    a_chunk_rows=5, k_last=2)
    out = run_golden(_program(loads, compute, m, 4), TINY_OS, image)
    weights = raw[1000:1000 + 160].reshape(40, 4)
    pixels = conv_rows(conv, 2, sum(steps))
    want = np.zeros((m, 4), np.int64)
    for c, kc in enumerate(steps):
        a = raw[64 * c:64 * c + 4 * m].reshape(m, 4)
        for r in range(kc):
            row = pixels[c * k + r]
            if row is not None:
                want += np.outer(a[:, r], weights[row - 2])
    assert np.array_equal(_sums(out, m, 4), want)
