"""Golden models: a functional interpreter of the instruction set, and the plain math.

:class:`Interpreter` executes a :class:`~dataflows.isa.Program` on a DRAM image exactly as
docs/isa.md defines each instruction (in program order, which the completion-count waits make
equivalent to any legal overlap of the three units). It tracks which buffer entries are defined:
an instruction that reads an undefined entry is a defective program and raises; bits a store
writes from undefined entries (the padding columns of a ragged compressed tile) come out with
care 0, so comparisons check every bit the ISA defines and nothing else.

The plain math (:func:`gemm_reference`, :func:`reference_image`) computes the same results
without instructions: ``C = A · (B ⊙ mask)`` with the workload's own mask generators and
``compress_nm`` for compressed tiles. :func:`check_golden` demands that the two agree, which
also checks the scheduler's addresses, tiling and dependencies for every program verified.

Attention programs (ops 7-11) run on the same interpreter and image: the vector unit's online
softmax keeps per-column state (``verification.golden_softmax.SoftmaxState``) whose parts are
defined or not like buffer entries, and :func:`check_attention` holds the interpreter's output
against float softmax attention of the same integer operands within a derived error bound.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from archsim.model import run_program
from dataflows.isa import (
    SLOTS_PER_BUFFER,
    Instr,
    Op,
    conv_part_rows,
    conv_parts_conflict_free,
    conv_rows,
    conv_t_rows,
    os_conv_chunks,
    row_bytes,
)
from dataflows.program import Program, Tensor
from dataflows.scheduler import compressed_tile_geometry
from dataflows.softmax_format import SoftmaxFormat
from dataflows.tiling import input_banks, input_row_bytes
from verification.dram import (
    DramImage,
    Operands,
    build_attention_image,
    build_image,
    compressed_rows,
    from_bytes,
    nm_tiles,
    read_dense,
    to_bytes,
    unpack_indices,
)
from verification.errors import VerificationError
from verification.golden_softmax import (
    SoftmaxState,
    probabilities,
    scale,
    scores,
    select_nm,
)
from verification.programs import Case
from workloads.arith import ceil_div, index_bits, wrap
from workloads.generators.attention import top_n_scores
from workloads.generators.nm import bdwp_masks, compress_nm, nm_mask
from workloads.spec import MAX_M, HardwareSpec

__all__ = [
    "Interpreter",
    "run_golden",
    "gemm_reference",
    "requantize",
    "reference_image",
    "check_golden",
    "check_attention",
    "describe_address",
    "decode_outputs",
    "check_hazards",
    "check_capacity",
    "Prepared",
    "prepare",
]


class _Plane:
    """One buffer slot's 2-D array of integers plus which entries are defined (grows on demand)."""

    def __init__(self) -> None:
        self.values = np.zeros((0, 0), dtype=np.int64)
        self.valid = np.zeros((0, 0), dtype=bool)

    def _grow(self, rows: int, cols: int) -> None:
        r, c = self.values.shape
        if rows <= r and cols <= c:
            return
        values = np.zeros((max(rows, r), max(cols, c)), dtype=np.int64)
        valid = np.zeros(values.shape, dtype=bool)
        values[:r, :c], valid[:r, :c] = self.values, self.valid
        self.values, self.valid = values, valid

    def write(self, block: np.ndarray, valid: np.ndarray | bool = True, row0: int = 0) -> None:
        """Entries ``[row0:row0+rows, 0:cols]`` ← ``block``; everything else keeps its state."""
        rows, cols = block.shape
        self._grow(row0 + rows, cols)
        self.values[row0:row0 + rows, :cols] = block
        self.valid[row0:row0 + rows, :cols] = valid

    def undefine(self, rows: slice, cols: slice) -> None:
        self.valid[rows, cols] = False

    def read(self, rows: int, cols: int, row0: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Entries ``[row0:row0+rows, 0:cols]`` and whether each is defined."""
        self._grow(row0 + rows, cols)
        return (self.values[row0:row0 + rows, :cols], self.valid[row0:row0 + rows, :cols])


class Interpreter:
    """Executes tile programs functionally on a DRAM image (docs/isa.md semantics, ops 1-11).

    Buffer and softmax state persist across :meth:`run` calls, as they do in the hardware;
    create a new interpreter for an independent program.

    Parameters
    ----------
    hw
        The accelerator: widths, array size and the softmax format come from it.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self.hw = hw
        self.fmt = SoftmaxFormat.of(hw)
        self.a = [_Plane(), _Plane()]
        # Operands per input-slot row as the last LOAD_A laid them out (the RTL's slot pitch).
        self.a_width = [0, 0]
        self.w = [_Plane(), _Plane()]
        self.idx = [_Plane(), _Plane()]
        self.acc = [_Plane(), _Plane()]
        self.masks = [_Plane(), _Plane()]
        self.softmax = SoftmaxState(self.fmt, hw.array.cols)
        self._handlers = {
            Op.LOAD_A: self._load_a, Op.LOAD_B: self._load_b, Op.STORE_C: self._store_c,
            Op.STORE_B: self._store_b, Op.COMPUTE: self._compute, Op.COMPRESS: self._compress,
            Op.ROWMAX: self._rowmax, Op.EXP: self._exp, Op.RESCALE: self._rescale,
            Op.NORMALIZE: self._normalize, Op.LOAD_MASK: self._load_mask,
        }

    def run(self, program: Program, image: DramImage) -> DramImage:
        """The image after ``program``; raises :class:`VerificationError` for a defective program,
        naming the instruction's index and op."""
        out = image.copy()
        for i, instr in enumerate(program.instrs):
            try:
                handler = self._handlers.get(instr.op)
                if handler is None:
                    raise VerificationError("not an instruction of docs/isa.md (ops 1-11)")
                self._check_fields(instr)
                handler(instr, out)
            except VerificationError as exc:
                raise VerificationError(f"instruction {i} ({instr.op.name}): {exc}") from None
        return out

    # -- checks -----------------------------------------------------------------------------

    def _check_fields(self, instr: Instr) -> None:
        if instr.nm_n:
            n, m = instr.nm_n, instr.nm_m
            if not (0 < n <= m <= MAX_M and m & (m - 1) == 0):
                raise VerificationError(f"invalid N:M pattern {n}:{m}")
        if instr.mask and instr.op not in (Op.ROWMAX, Op.EXP):
            raise VerificationError("mask=1, but only ROWMAX and EXP apply an element mask")
        if instr.op not in _ROW_OFFSETS and (instr.a_row or instr.b_row or instr.c_row):
            raise VerificationError("a slot row offset on an instruction that has none "
                                    "(COMPRESS and the softmax ops work from row 0)")
        if instr.op in _SOFTMAX_TILES:
            self._check_softmax_fields(instr)
        elif instr.op == Op.COMPUTE:
            rows, cols = self.hw.array.rows, self.hw.array.cols
            if instr.k > rows or instr.cols > cols:
                raise VerificationError(
                    f"k={instr.k}, cols={instr.cols} exceed the {rows}x{cols} array")
            for name in ("k", "k_last"):
                if instr.nm_n and getattr(instr, name) % instr.nm_n:
                    raise VerificationError(
                        f"{name}={getattr(instr, name)} is not a multiple of nm_n={instr.nm_n}")
            self._check_chunks(instr)
        elif instr.op == Op.COMPRESS:
            if not instr.nm_n:
                raise VerificationError("COMPRESS without an N:M pattern")
            if instr.rows % instr.nm_m:
                raise VerificationError(f"rows={instr.rows} is not a multiple of nm_m={instr.nm_m}")
        elif instr.op == Op.STORE_B and not instr.nm_n:
            raise VerificationError("STORE_B without an N:M pattern (it stores compressed rows)")

    def _check_softmax_fields(self, instr: Instr) -> None:
        """The vector unit's tiles and the mask store: one query column per array column."""
        cols = self.hw.array.cols
        if instr.rows < 1 or not 1 <= instr.cols <= cols:
            raise VerificationError(
                f"a {instr.rows}x{instr.cols} tile; the vector unit and its mask store take 1 or "
                f"more rows of 1 to {cols} columns (array.cols)")

    @staticmethod
    def _require(valid: np.ndarray, what: str, row0: int = 0) -> None:
        if not valid.all():
            r, c = np.argwhere(~valid)[0]
            raise VerificationError(f"reads undefined {what} entry ({r + row0}, {c})")

    # -- DMA --------------------------------------------------------------------------------

    def _dram_rows(self, image: DramImage, instr: Instr, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        data = np.empty((instr.rows, nbytes), dtype=np.uint8)
        care = np.empty((instr.rows, nbytes), dtype=np.uint8)
        for r in range(instr.rows):
            addr = instr.addr + r * instr.stride
            data[r], care[r] = image.read(addr, nbytes), image.read_care(addr, nbytes)
        return data, care

    def _elements(self, data: np.ndarray, care: np.ndarray, cols: int, nbytes: int,
                  bits: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (data.shape[0], cols, nbytes)
        values = from_bytes(data[:, :cols * nbytes].reshape(shape), bits)
        valid = (care[:, :cols * nbytes].reshape(shape) == 0xFF).all(axis=2)
        return values, valid

    def _load_a(self, instr: Instr, image: DramImage) -> None:
        db = self.hw.data_bytes
        data, care = self._dram_rows(image, instr, instr.cols * db)
        self.a_width[instr.slot] = input_row_bytes(max(instr.cols, instr.k), self.hw) // db
        self.a[instr.slot].write(*self._elements(data, care, instr.cols, db, self.hw.data_bits),
                                 row0=instr.a_row)

    def _load_b(self, instr: Instr, image: DramImage) -> None:
        hw, s, r0 = self.hw, instr.slot, instr.b_row
        db = hw.data_bytes
        if not instr.nm_n:
            data, care = self._dram_rows(image, instr, instr.cols * db)
            self.w[s].write(*self._elements(data, care, instr.cols, db, hw.data_bits), row0=r0)
            # A dense load defines values only: indices of those entries are now meaningless.
            self.idx[s].write(np.zeros((instr.rows, instr.cols), np.int64), False, row0=r0)
            return
        ib = index_bits(instr.nm_m)
        index_bytes = ceil_div(instr.cols * ib, 8)
        data, care = self._dram_rows(image, instr, instr.cols * db + index_bytes)
        self.w[s].write(*self._elements(data, care, instr.cols, db, hw.data_bits), row0=r0)
        region, region_care = data[:, instr.cols * db:], care[:, instr.cols * db:]
        idx = unpack_indices(region, instr.cols, ib)
        idx_valid = unpack_indices(region_care, instr.cols, ib) == (1 << ib) - 1
        self.idx[s].write(idx, idx_valid, row0=r0)

    def _load_mask(self, instr: Instr, image: DramImage) -> None:
        # One contiguous burst: row r is ⌈cols/8⌉ bytes at addr + r·⌈cols/8⌉, column c in bit
        # c mod 8 of byte c div 8; the bits past cols are not part of the tile.
        width = ceil_div(instr.cols, 8)
        shape = (instr.rows, width)
        raw = image.read(instr.addr, instr.rows * width).reshape(shape)
        care = image.read_care(instr.addr, instr.rows * width).reshape(shape)
        bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :instr.cols]
        valid = np.unpackbits(care, axis=1, bitorder="little")[:, :instr.cols]
        self.masks[instr.slot].write(bits.astype(np.int64), valid.astype(bool))

    def _store_c(self, instr: Instr, image: DramImage) -> None:
        hw = self.hw
        values, valid = self.acc[instr.slot].read(instr.rows, instr.cols, instr.c_row)
        self._require(valid, "accumulator", instr.c_row)
        if instr.requant:
            values = requantize(values, instr.shift, hw.acc_bits, hw.data_bits)
        raw = to_bytes(values, hw.data_bytes if instr.requant else hw.acc_bytes
                       ).reshape(instr.rows, -1)
        for r in range(instr.rows):
            image.write(instr.addr + r * instr.stride, raw[r])

    def _store_b(self, instr: Instr, image: DramImage) -> None:
        s = instr.slot
        values, values_valid = self.w[s].read(instr.rows, instr.cols, instr.b_row)
        idx, idx_valid = self.idx[s].read(instr.rows, instr.cols, instr.b_row)
        raw, care = compressed_rows(values, idx, self.hw, instr.nm_m, values_valid, idx_valid)
        for r in range(instr.rows):
            image.write(instr.addr + r * instr.stride, raw[r], care[r])

    # -- PE array and vector unit -----------------------------------------------------------

    def _compute(self, instr: Instr, image: DramImage) -> None:
        result = sum(self._product(chunk) for chunk in self._chunk_words(instr))
        acc = self.acc[instr.c_slot]
        if instr.accumulate:
            previous, valid = acc.read(instr.m, instr.cols, instr.c_row)
            self._require(valid, "accumulator", instr.c_row)
            result = previous + result
        acc.write(wrap(result, self.hw.acc_bits), row0=instr.c_row)

    def _chunk_words(self, instr: Instr) -> list[Instr]:
        """The reduction chunks of a COMPUTE (docs/isa.md, "Output-stationary COMPUTE"), each
        as the one-chunk word that reads what it reads: chunk ``c`` from A rows ``a_row +
        c·a_chunk_rows`` and weight rows ``b_row + c·b_chunk_rows``, ``k`` steps (the last
        ``k_last``); through the address mode on A rows, the chunk's kernel offsets and patch
        (``isa.os_conv_chunks``); on weight rows, the mode's pixels ``c·k ..``."""
        steps, conv = instr.chunk_steps, instr.conv
        if conv is None or not self.hw.array.output_stationary:
            return [replace(instr, k=k, a_row=instr.a_row + c * instr.a_chunk_rows,
                            b_row=instr.b_row + c * instr.b_chunk_rows)
                    for c, k in enumerate(steps)]
        if conv.b:  # the weight-side mode's pixels go on from one chunk to the next
            return [replace(instr, k=k, a_row=instr.a_row + c * instr.a_chunk_rows, conv=replace(
                conv, ow0=(conv.ow0 + c * instr.k) % conv.out_w,
                oh0=conv.oh0 + (conv.ow0 + c * instr.k) // conv.out_w))
                for c, k in enumerate(steps)]
        return [replace(instr, k=k, a_row=row, conv=address,
                        b_row=instr.b_row + c * instr.b_chunk_rows)
                for c, (k, (row, address)) in enumerate(zip(steps, os_conv_chunks(
                    conv, instr.a_row, len(steps))))]

    def _check_chunks(self, instr: Instr) -> None:
        """Reduction chunks (docs/isa.md, "Output-stationary COMPUTE") are the
        output-stationary array's; there the address mode on A rows walks kernel offsets (it
        needs the kernel's size) and the transposing read does not exist."""
        if instr.k_last > self.hw.array.rows:
            raise VerificationError(f"k_last={instr.k_last} exceeds the array's "
                                    f"{self.hw.array.rows} rows")
        if not self.hw.array.output_stationary:
            if instr.chunks > 1:
                raise VerificationError(f"COMPUTE chunks={instr.chunks} needs the "
                                        f"output-stationary array (this one is "
                                        f"{self.hw.array.dataflow})")
            return
        conv = instr.conv
        if conv is not None and conv.t:
            raise VerificationError("the transposing read (conv_t) is weight-stationary only")
        if conv is None or conv.b:
            return
        if conv.kh < 1 or conv.kw < 1:
            raise VerificationError(f"the address mode on A rows walks a kh x kw kernel on the "
                                    f"output-stationary array (got {conv.kh}x{conv.kw})")
        if (conv.kh0 * conv.kw + conv.kw0) % max(1, conv.group):
            raise VerificationError(f"the first kernel offset ({conv.kh0}, {conv.kw0}) is not "
                                    f"at a multiple of conv_group={conv.group}")

    def _product(self, instr: Instr) -> np.ndarray:
        """The ``m × cols`` product of one reduction chunk (``instr.k`` PE steps)."""
        k, cols = instr.k, instr.cols
        w, w_valid = self._b_rows(instr)
        self._require(w_valid, "weight", instr.b_row)
        if instr.nm_n:
            idx, idx_valid = self.idx[instr.b_slot].read(k, cols, instr.b_row)
            self._require(idx_valid, "weight index", instr.b_row)
            if idx.max(initial=0) >= instr.nm_m:
                raise VerificationError(f"weight index {idx.max()} >= M={instr.nm_m}")
            # col(r, j) = (r // N)·M + idx[r][j]: the activation each kept weight multiplies.
            col = (np.arange(k)[:, None] // instr.nm_n) * instr.nm_m + idx
            a, a_valid = self._a_rows(instr, k // instr.nm_n * instr.nm_m)
            self._require(a_valid[:, col], "input", instr.a_row)
            return np.einsum("irj,rj->ij", a[:, col], w, dtype=np.int64)
        a, a_valid = self._a_rows(instr, k)
        self._require(a_valid, "input", instr.a_row)
        return a @ w

    def _a_rows(self, instr: Instr, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` activation rows a COMPUTE streams, ``width`` operands each: slot rows from
        ``a_row`` on, or through the convolution address mode (padding rows are zero and
        defined)."""
        plane = self.a[instr.slot]
        if instr.conv is None or instr.conv.b:
            return plane.read(instr.m, width, instr.a_row)
        if instr.transposing:
            return self._a_transposed(instr, width)
        if instr.conv.group > 1:
            return self._a_parts(instr, width)
        return self._gather(plane, conv_rows(instr.conv, instr.a_row, instr.m), width)

    def _a_parts(self, instr: Instr, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Several kernel offsets per streamed row: part ``j`` (one pixel of the slot's row
        width ``P``) fills operands ``j·P .. (j+1)·P − 1``; the parts must lie in distinct bank
        groups (docs/isa.md, "Several kernel offsets per COMPUTE")."""
        conv, hw = instr.conv, self.hw
        part = self.a_width[instr.slot]
        if part == 0 or width > conv.group * part:
            raise VerificationError(f"a COMPUTE of {width} operands in {conv.group} parts of "
                                    f"{part} (the slot's row width)")
        groups = input_banks(hw) * hw.array.rows // part
        if not conv_parts_conflict_free(conv, groups):
            raise VerificationError(f"the parts of {conv} share a bank group ({groups} groups)")
        plane = self.a[instr.slot]
        pieces = [self._gather(plane, rows, part)
                  for rows in conv_part_rows(conv, instr.a_row, instr.m)]
        a = np.concatenate([p[0] for p in pieces], axis=1)[:, :width]
        valid = np.concatenate([p[1] for p in pieces], axis=1)[:, :width]
        return a, valid

    def _a_transposed(self, instr: Instr, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The transposing read (docs/isa.md): per block of ``rows`` streamed rows, the ``k``
        pixel rows of its kernel offset and channel chunk, transposed (streamed row ``i`` holds
        channel ``i mod rows`` of every pixel)."""
        rows, conv = self.hw.array.rows, instr.conv
        if instr.nm_n or conv.group > 1 or instr.m % rows or width > rows or conv.kh * conv.kw < 1:
            raise VerificationError(
                f"a transposing COMPUTE must be dense, one offset per block, m a multiple of "
                f"{rows} and k <= {rows} (got nm_n={instr.nm_n}, group={conv.group}, "
                f"m={instr.m}, k={width}, kernel {conv.kh}x{conv.kw})")
        pieces = [self._gather(self.a[instr.slot], pixels, rows)
                  for pixels in conv_t_rows(conv, instr.a_row, width, instr.m // rows)]
        a = np.concatenate([p[0].T for p in pieces], axis=0)
        valid = np.concatenate([p[1].T for p in pieces], axis=0)
        return a, valid

    def _b_rows(self, instr: Instr) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` weight rows a COMPUTE preloads: from ``b_row`` on, or through the
        convolution address mode (``conv.b``; dense only)."""
        plane = self.w[instr.b_slot]
        if instr.conv is None or not instr.conv.b:
            return plane.read(instr.k, instr.cols, instr.b_row)
        if instr.nm_n:
            raise VerificationError("the convolution address mode on weight rows is dense only")
        return self._gather(plane, conv_rows(instr.conv, instr.b_row, instr.k), instr.cols)

    @staticmethod
    def _gather(plane: _Plane, rows: list, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` of a slot (None: a zero row, defined), ``width`` entries each."""
        real = [r for r in rows if r is not None]
        if real and min(real) < 0:
            raise VerificationError(f"the convolution address mode reads slot row {min(real)}")
        values, valid = plane.read(max(real, default=0) + 1, width)
        a = np.zeros((len(rows), width), np.int64)
        a_valid = np.ones((len(rows), width), bool)
        for i, r in enumerate(rows):
            if r is not None:
                a[i], a_valid[i] = values[r], valid[r]
        return a, a_valid

    def _compress(self, instr: Instr, image: DramImage) -> None:
        s, rows, cols = instr.slot, instr.rows, instr.cols
        dense, valid = self.w[s].read(rows, cols)
        self._require(valid, "weight")
        values, idx = compress_nm(dense.copy(), instr.nm_n, instr.nm_m)
        kc = values.shape[0]
        # In place: the slot's rows now hold kc compressed rows of `cols` entries. The ISA
        # defines nothing else of those rows, nor the dense rows beyond them.
        for plane, block in ((self.w[s], values), (self.idx[s], idx.astype(np.int64))):
            plane.write(block)
            plane.undefine(slice(0, kc), slice(cols, None))
            plane.undefine(slice(kc, rows), slice(None))


    # -- vector unit: the online softmax of attention (docs/isa.md, ops 7-10) --------------

    def _scores(self, instr: Instr) -> tuple[np.ndarray, np.ndarray]:
        """(scores, kept) of the rows ROWMAX or EXP reads: ``0..rows-1``, or EXP's
        ``k..k+rows-1``, of accumulator slot ``c_slot``, and of mask slot ``slot`` if ``mask``."""
        first = instr.k if instr.op == Op.EXP else 0
        end, cols = first + instr.rows, instr.cols
        acc, valid = self.acc[instr.c_slot].read(end, cols)
        self._require(valid[first:], "accumulator", first)
        if not instr.mask:
            return scores(acc[first:], self.fmt), np.ones((instr.rows, cols), bool)
        bits, valid = self.masks[instr.slot].read(end, cols)
        self._require(valid[first:], f"mask slot {instr.slot}", first)
        return scores(acc[first:], self.fmt), bits[first:].astype(bool)

    def _rowmax(self, instr: Instr, image: DramImage) -> None:
        self.softmax.rowmax(*self._scores(instr), reset=not instr.accumulate)

    def _exp(self, instr: Instr, image: DramImage) -> None:
        x, keep = self._scores(instr)
        e = self.softmax.exponentials(x, keep)
        if instr.nm_n:
            e, idx = select_nm(x, keep, e, instr.nm_n, instr.nm_m)
            idx_valid = True
        else:  # dense rows, as a dense LOAD_B writes them: no index is defined
            idx, idx_valid = np.zeros(e.shape, np.int64), False
        self.softmax.add(e)
        self.w[instr.b_slot].write(probabilities(e, self.fmt))
        self.idx[instr.b_slot].write(idx, idx_valid)

    def _scale(self, instr: Instr, factor: np.ndarray, shift: int) -> None:
        acc = self.acc[instr.slot]
        values, valid = acc.read(instr.rows, instr.cols)
        self._require(valid, "accumulator")
        acc.write(scale(values, factor, shift, self.hw.acc_bits))

    def _rescale(self, instr: Instr, image: DramImage) -> None:
        self._scale(instr, self.softmax.correction(instr.cols), self.fmt.exp_bits)

    def _normalize(self, instr: Instr, image: DramImage) -> None:
        factor = self.softmax.reciprocals(instr.cols)
        self._scale(instr, factor, self.fmt.k - self.fmt.exp_bits)


_SOFTMAX_TILES = (Op.ROWMAX, Op.EXP, Op.RESCALE, Op.NORMALIZE, Op.LOAD_MASK)

#: Instructions that address rows of a slot from a row offset (docs/isa.md).
_ROW_OFFSETS = (Op.LOAD_A, Op.LOAD_B, Op.STORE_C, Op.STORE_B, Op.COMPUTE)


def run_golden(program: Program, hw: HardwareSpec, image: DramImage) -> DramImage:
    """The expected DRAM image after ``program`` runs on an idle accelerator from ``image``."""
    return Interpreter(hw).run(program, image)


# --------------------------------------------------------------------------------------------
# Plain math
# --------------------------------------------------------------------------------------------


def requantize(acc: np.ndarray, shift: int, acc_bits: int, data_bits: int) -> np.ndarray:
    """A requantizing STORE_C's output (docs/isa.md): ``acc`` (``acc_bits`` two's complement)
    shifted right arithmetically by ``shift``, rounded half to even, saturated to ``data_bits``.

    A shift of ``acc_bits`` or more gives 0 (as ``acc_bits`` itself does).
    """
    acc = np.asarray(acc, dtype=np.int64)
    if shift >= acc_bits:
        return np.zeros_like(acc)
    q = acc >> shift
    if shift:
        rest, half = acc & ((1 << shift) - 1), 1 << (shift - 1)  # the bits shifted out
        q = q + ((rest > half) | ((rest == half) & (q & 1 == 1)))
    return np.clip(q, -(1 << (data_bits - 1)), (1 << (data_bits - 1)) - 1)


def gemm_reference(a: np.ndarray, b: np.ndarray, acc_bits: int,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """``C = A · (B ⊙ mask)`` in ``acc_bits``-bit two's complement (``mask=None``: dense)."""
    b = np.asarray(b, dtype=np.int64)
    if mask is not None:
        b = np.where(mask, b, 0)
    return wrap(np.asarray(a, dtype=np.int64) @ b, acc_bits)


def _mask(case: Case, tag: int, b: np.ndarray) -> np.ndarray | None:
    """The workload's pruning mask of one copy of B (``k × n``), None when the GEMM runs dense."""
    task, t = case.tasks[tag], case.tilings[tag]
    if not t.sparse:
        return None
    n, m = task.nm
    if task.phase == "bp":
        # BP: B = W[out, in], k = out; BDWP's second mask keeps N of M along out.
        return bdwp_masks(b, n, m)[1]
    if task.phase == "ff":
        # FF: B = Wᵀ, k = in; the FF mask keeps N of M along in.
        return bdwp_masks(b.T, n, m)[0].T
    return nm_mask(b, n, m, axis=0)


def reference_image(case: Case, operands: Operands, initial: DramImage) -> DramImage:
    """The image the program must leave, computed from the math alone (no instructions)."""
    hw, program = case.hw, case.program
    out = initial.copy()
    for tag, task in enumerate(case.tasks):
        b = operands.b[tag]
        if case.segment == "pregen":
            _reference_pregen(case, tag, b, out)
            continue
        c = np.concatenate([gemm_reference(operands.a[tag][i], b[i], hw.acc_bits,
                                           _mask(case, tag, b[i])) for i in range(task.copies)])
        # Outputs are final: the scheduler stores them requantized at operand width.
        c = requantize(c, hw.requant_shift, hw.acc_bits, hw.data_bits)
        tc = program.tensors[f"{task.name}.C"]
        raw = to_bytes(c, hw.data_bytes).reshape(c.shape[0], -1)
        for r in range(c.shape[0]):
            out.write(tc.addr + r * tc.stride, raw[r])
    return out


def _reference_pregen(case: Case, tag: int, b: np.ndarray, out: DramImage) -> None:
    task, t, hw = case.tasks[tag], case.tilings[tag], case.hw
    nm_n, nm_m = task.nm
    tensor = case.program.tensors[f"{task.weight}.nm"]
    _, k, n = t.dims(task)
    _, rb = compressed_tile_geometry(t, task.nm, hw)
    nn = ceil_div(n, t.tn)
    # The compressed tiles must be exactly what a GEMM loads (the same packing as nm_tiles);
    # columns past a ragged tile's width are padding the ISA leaves undefined.
    for tile, (offset, raw) in enumerate(nm_tiles(b[:1], case, tag)):
        ki, ni = divmod(tile, nn)
        tk, tn = min(t.tk, k - ki * t.tk), min(t.tn, n - ni * t.tn)
        rows = tk // nm_m * nm_n
        valid = np.zeros((rows, hw.array.cols), bool)
        valid[:, :tn] = True
        _, care = compressed_rows(np.zeros(valid.shape), np.zeros(valid.shape), hw, nm_m, valid, valid)
        for r in range(rows):
            out.write(tensor.addr + offset + r * rb, raw[r], care[r])


def check_golden(case: Case, operands: Operands, initial: DramImage, expected: DramImage) -> None:
    """Raise unless the interpreter's image and the math's image agree bit for bit.

    Both the bytes (on specified bits) and the set of specified bits must be equal: the
    interpreter may not call a bit it should define "don't care".
    """
    reference = reference_image(case, operands, initial)
    if not np.array_equal(reference.care, expected.care):
        addr = int(np.flatnonzero(reference.care != expected.care)[0])
        raise VerificationError(
            f"seed {case.seed}: interpreter and math disagree on which bits are defined at "
            f"{addr:#x} ({describe_address(case, addr)})")
    bad = reference.differing(expected.data)
    if bad.size:
        addr = int(bad[0])
        raise VerificationError(
            f"seed {case.seed}: interpreter and math disagree at {addr:#x} "
            f"({describe_address(case, addr)}); {bad.size} bytes differ")


def _tensor_at(program: Program, addr: int) -> Tensor | None:
    """The tensor of ``program`` whose bytes hold ``addr``, if any."""
    for tensor in program.tensors.values():
        if tensor.addr <= addr < tensor.addr + tensor.nbytes:
            return tensor
    return None


def describe_address(case: Case, addr: int) -> str:
    """Which tensor (and element, for dense tensors) a DRAM byte address belongs to."""
    tensor = _tensor_at(case.program, addr)
    if tensor is None:
        return "outside every tensor"
    offset = addr - tensor.addr
    if tensor.fmt == "dense":
        row, byte = divmod(offset, tensor.stride)
        return f"{tensor.name}[{row}, {byte // tensor.elem_bytes}]"
    return f"{tensor.name} byte {offset}"


def decode_outputs(case: Case, data: np.ndarray) -> dict[str, np.ndarray]:
    """The output tensors (``*.C``, attention's ``*.OT``) of a case from a DRAM byte array."""
    out = {}
    for tensor in case.program.tensors.values():
        if tensor.name.endswith((".C", ".OT")):
            out[tensor.name] = read_dense(data, tensor.addr, tensor.rows, tensor.cols,
                                          tensor.stride, tensor.elem_bytes, 8 * tensor.elem_bytes)
    return out


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def _kept_scores(case: Case, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``keep`` narrowed to what N:M on scores keeps (the pattern's ``top_n_scores``)."""
    if case.attention.plan.score_nm is None:
        return keep
    n, m = case.attention.plan.score_nm
    return keep & top_n_scores(x, keep, n, m)[:, :x.shape[1]]


def _attention_of_item(case: Case, tensors: dict[str, np.ndarray], expected: DramImage
                       ) -> tuple[np.ndarray, ...]:
    """(q, k, v, Oᵀ's columns of the work item as [query, d], query columns, element mask) of
    an attention case: operands from ``tensors``, the output from the ``expected`` image."""
    att = case.attention
    op, item = att.op, att.work
    d, g, name = op.head_dim, op.heads // op.groups, op.name
    base = item.batch * op.groups + item.group
    cols = np.arange(item.col0, item.col0 + item.cols)
    q = tensors[f"{name}.QT"][base * d:(base + 1) * d, cols].T
    k = tensors[f"{name}.K"][base * op.kv_len:(base + 1) * op.kv_len]
    v = tensors[f"{name}.VT"][base * d:(base + 1) * d].T
    ot = case.program.tensors[f"{name}.OT"]
    out = read_dense(expected.data, ot.addr, ot.rows, ot.cols, ot.stride, ot.elem_bytes,
                     8 * ot.elem_bytes)
    got = out[base * d:(base + 1) * d, cols].T
    keep = att.plan.mask.dense()[item.batch, item.group * g + cols // op.queries,
                                 cols % op.queries]
    return q, k, v, got, cols, keep


def check_attention(case: Case, tensors: dict[str, np.ndarray], expected: DramImage) -> None:
    """Raise unless the work item's Oᵀ in the interpreter's ``expected`` image is float
    attention of the same integer operands (base-2 softmax of the fixed-point scores, the
    pattern's element mask, N:M's top-N) within the datapath's error.

    Bound, per query column with ``n`` kept keys, ``L = Σ 2^(s - max) ≥ 1`` and ``V = max|v|``:
    every P̃ is within ``2^-P`` of exact (rounding, table error ``1.25·2^-E``, saturation) and
    enters the output with weight ``≤ 1/L``; corrections, sums and the reciprocal add
    ``O(n·steps·2^-E)`` relative error and each RESCALE/NORMALIZE floors one output LSB. Twice
    that, plus half an LSB of V's format for the requantizing store (shift by ``P``, round half
    to even; saturation cannot add error, as float attention lies within V's range), is the
    tolerance. A column with no kept key must be exactly zero. When the scores or
    the unnormalised output could wrap the accumulator (legal, defined by the ISA, but no
    longer attention) only that last check runs.
    """
    hw, fmt = case.hw, SoftmaxFormat.of(case.hw)
    q, k, v, got, cols, keep = _attention_of_item(case, tensors, expected)
    acc = q @ k.T
    x = acc >> fmt.score_shift
    kept = _kept_scores(case, x, keep)
    n = kept.sum(axis=1)
    if (got[n == 0] != 0).any():
        raise VerificationError(f"seed {case.seed}: a query with no kept key has a non-zero "
                                f"output")
    lo, hi = fmt.score_range
    limit = 1 << (hw.acc_bits - 1)
    vmax = int(np.abs(v).max(initial=0))
    if (np.abs(acc[keep]).max(initial=0) >= limit or x[keep].min(initial=0) < lo
            or x[keep].max(initial=0) > hi
            or keep.sum(axis=1).max() * vmax << fmt.prob_bits >= limit):
        return
    frac, p_frac = fmt.operand_frac_bits, fmt.prob_bits
    s = np.where(kept, x / 2.0**fmt.frac_bits, -np.inf)
    top = np.where(n > 0, s.max(axis=1), 0.0)
    u = np.where(kept, np.exp2(s - top[:, None]), 0.0)
    total = u.sum(axis=1)
    ref = (u / np.maximum(total, 1.0)[:, None]) @ (v / 2.0**frac)
    # Oᵀ left requantized to V's format (frac fraction bits): half an LSB more error.
    err = np.abs(got / 2.0**frac - ref).max(axis=1, initial=0.0)
    steps = len(case.attention.steps) + 1  # ROWMAX corrections, plus NORMALIZE
    tol = 2 * (vmax / 2.0**frac * (n * 2.0**-p_frac + 3 * (n + steps) * steps
                                   * 2.0**-fmt.exp_bits) / np.maximum(total, 1.0)
               + (steps + 2) * 2.0 ** -(p_frac + frac)) + 2.0 ** -(frac + 1)
    bad = np.flatnonzero(err > tol)
    if bad.size:
        j = int(bad[0])
        raise VerificationError(
            f"seed {case.seed}: attention output of query column {int(cols[j])} is off float "
            f"attention by {err[j]:.4g} (bound {tol[j]:.4g}, {int(n[j])} kept keys); "
            f"{bad.size} column(s) exceed the bound")


# --------------------------------------------------------------------------------------------
# Dependencies versus timing
# --------------------------------------------------------------------------------------------


#: A slot's rows ``[lo, hi)``; the whole slot for instructions without a row offset.
_WHOLE = (0, 1 << 40)

_Access = tuple[str, int, int, int]  # (buffer, slot, first row, end row)


def _read_rows(buffer: str, slot: int, first: int, count: int, conv) -> _Access:
    """The rows ``first..first+count-1`` of a slot, or the span the convolution address mode
    reads from ``first`` (``conv``)."""
    if conv is None:
        return buffer, slot, first, first + count
    real = [r for rows in conv_part_rows(conv, first, count) for r in rows if r is not None]
    return buffer, slot, min(real, default=first), max(real, default=first - 1) + 1


def _transposed_rows(instr: Instr, pe_rows: int) -> _Access:
    """The input rows a transposing read's blocks read (``m / pe_rows`` blocks of ``k``
    pixels). With ``k < pe_rows`` the RTL reads ``pe_rows`` pixels per block, but the weight
    rows from ``k`` on are zero, so only the first ``k`` pixels matter (and are modelled)."""
    blocks = conv_t_rows(instr.conv, instr.a_row, instr.k, instr.m // pe_rows)
    real = [r for rows in blocks for r in rows if r is not None]
    first = instr.a_row
    return "input", instr.slot, min(real, default=first), max(real, default=first - 1) + 1


def _accesses(instr: Instr, pe_rows: int) -> tuple[set[_Access], set[_Access]]:
    """(slot rows written, slot rows read) by one instruction (``pe_rows``: the array's PE
    rows, which a transposing read's block count depends on)."""
    op = instr.op

    def rows(buffer: str, slot: int, first: int, count: int) -> _Access:
        return buffer, slot, first, first + count

    def whole(buffer: str, slot: int) -> _Access:
        return (buffer, slot) + _WHOLE

    if op == Op.LOAD_A:
        return {rows("input", instr.slot, instr.a_row, instr.rows)}, set()
    if op == Op.LOAD_B:
        return {rows("weight", instr.slot, instr.b_row, instr.rows)}, set()
    if op == Op.COMPRESS:
        return {whole("weight", instr.slot)}, {whole("weight", instr.slot)}
    if op == Op.COMPUTE:
        acc = rows("accumulator", instr.c_slot, instr.c_row, instr.m)
        conv_a = instr.conv is not None and not instr.conv.b
        conv_b = instr.conv is not None and instr.conv.b
        a_read = _transposed_rows(instr, pe_rows) if instr.transposing else _read_rows(
            "input", instr.slot, instr.a_row, instr.m, instr.conv if conv_a else None)
        reads = {a_read,
                 _read_rows("weight", instr.b_slot, instr.b_row, instr.k,
                            instr.conv if conv_b else None)}
        if instr.accumulate:
            reads.add(acc)
        return {acc}, reads
    if op == Op.STORE_C:
        # It reads its rows, and it shares the slot's read port with COMPUTE: no COMPUTE may
        # touch any row of the slot meanwhile (docs/isa.md, "Slot capacity").
        return set(), {whole("accumulator", instr.slot)}
    if op == Op.STORE_B:
        return set(), {rows("weight", instr.slot, instr.b_row, instr.rows)}
    mask = {whole("mask", instr.slot)} if instr.mask else set()
    if op == Op.ROWMAX:  # the running max and sums live in the vector unit: no buffer
        return set(), {whole("accumulator", instr.c_slot)} | mask
    if op == Op.EXP:
        return {whole("weight", instr.b_slot)}, {whole("accumulator", instr.c_slot)} | mask
    if op in (Op.RESCALE, Op.NORMALIZE):
        return {whole("accumulator", instr.slot)}, {whole("accumulator", instr.slot)}
    if op == Op.LOAD_MASK:
        return {whole("mask", instr.slot)}, set()
    raise VerificationError(f"{op.name}: buffer accesses not modelled by check_hazards")


def check_hazards(program: Program, trace: list[tuple[int, int]], pe_rows: int) -> None:
    """Raise if two instructions of different units touch the same rows of a buffer slot out of
    program order.

    The interpreter executes in program order; that equals the hardware's overlapped execution
    only if every conflicting pair (same slot, overlapping rows, at least one writer) on
    different units is separated in time: the later one starts no earlier than the earlier one
    ends. ``trace`` is the SimPy model's per-instruction ``(start, end)``, so a failure here is
    a scheduler bug (a missing wait), not an RTL bug. An earlier access that a later write
    covers entirely is forgotten: ordering is transitive through that write.
    """
    history: dict[tuple[str, int], list[tuple[int, int, int, bool]]] = {}
    instrs = program.instrs
    for j, instr in enumerate(instrs):
        writes, reads = _accesses(instr, pe_rows)
        for access in reads | writes:
            buffer, slot, lo, hi = access
            write = access in writes
            for i, i_lo, i_hi, i_write in history.get((buffer, slot), ()):
                if (write or i_write) and i_lo < hi and lo < i_hi and i != j and \
                        instrs[i].unit != instr.unit and trace[j][0] < trace[i][1]:
                    raise VerificationError(
                        f"scheduler hazard on {buffer} slot {slot} rows {max(lo, i_lo)}..: "
                        f"instruction {j} ({instr.op.name}) starts in cycle {trace[j][0]} before "
                        f"instruction {i} ({instrs[i].op.name}) ends in cycle {trace[i][1]}; a "
                        f"wait is missing")
        for buffer, slot, lo, hi in writes:
            entries = history.get((buffer, slot), [])
            history[(buffer, slot)] = [e for e in entries if not (lo <= e[1] and e[2] <= hi)]
        for access in reads | writes:
            buffer, slot, lo, hi = access
            history.setdefault((buffer, slot), []).append((j, lo, hi, access in writes))


def check_capacity(program: Program, hw: HardwareSpec) -> None:
    """Raise if a tile does not fit its buffer slot, half of its buffer.

    ``BufferSpec``: each buffer is split in two halves (the ping-pong slots a 1-bit slot field
    selects). A tile larger than a half would overwrite the other slot, or wrap, in hardware;
    the interpreter has no such limit, so this check is what catches the scheduler emitting one.
    """
    buffers = hw.buffers
    for i, instr in enumerate(program.instrs):
        if instr.op == Op.LOAD_A:
            width = max(instr.cols, instr.k)  # a LOAD_A with k > cols lays rows out k wide
            need, name, cap = (instr.a_row + instr.rows) * input_row_bytes(width, hw), "input", \
                buffers.input_bytes
        elif instr.op == Op.LOAD_B:
            need, name, cap = (instr.b_row + instr.rows) * row_bytes(instr, hw), "weight", \
                buffers.weight_bytes
        elif instr.op == Op.COMPUTE:
            # Rows at an offset follow full-width rows: the RTL's accumulator rows are array.cols wide.
            cols = hw.array.cols if instr.c_row else instr.cols
            need, name, cap = (instr.c_row + instr.m) * cols * hw.acc_bytes, "accumulator", \
                buffers.accumulator_bytes
        elif instr.op == Op.EXP:
            # P̃ rows written into the weight slot: dense, or N of every M (a cut group padded).
            rows = ceil_div(instr.rows, instr.nm_m) * instr.nm_n if instr.nm_n else instr.rows
            need, name, cap = rows * row_bytes(replace(instr, op=Op.LOAD_B), hw), "weight", \
                buffers.weight_bytes
        elif instr.op in (Op.ROWMAX, Op.RESCALE, Op.NORMALIZE):
            need, name, cap = instr.rows * instr.cols * hw.acc_bytes, "accumulator", \
                buffers.accumulator_bytes
        else:
            continue
        if need > cap // SLOTS_PER_BUFFER:
            raise VerificationError(
                f"instruction {i} ({instr.op.name}): its {need}-byte tile exceeds a slot of the "
                f"{name} buffer (half of buffers.{name}_bytes = {cap // SLOTS_PER_BUFFER} B); the scheduler "
                f"sized it for more than one slot")


# --------------------------------------------------------------------------------------------
# Everything a testbench needs for one case
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    """A case ready to run: its input image, the expected image and the model's timing.

    Attributes
    ----------
    trace
        The SimPy model's ``(start, end)`` of every instruction (program cycles).
    cycles
        The SimPy model's total cycles.
    """

    case: Case
    image: DramImage
    expected: DramImage
    trace: list[tuple[int, int]]
    cycles: int


def prepare(case: Case) -> Prepared:
    """Operands, golden image and timing of a case, with every pure-Python cross-check run.

    The image's random bytes come from the case's seed. Raises :class:`VerificationError` if
    the interpreter and the math disagree, the program has a hazard or a tile larger than its
    buffer slot: those are defects of the golden models or the scheduler, to be fixed before the
    RTL can be judged. Attention cases run on the same interpreter and are checked against
    float attention instead of the GEMM math (:func:`check_attention`).
    """
    rng = np.random.default_rng(case.seed)
    if case.attention is not None:
        image, tensors = build_attention_image(case, rng)
        expected = run_golden(case.program, case.hw, image)
        check_attention(case, tensors, expected)
    else:
        image, operands = build_image(case, rng)
        expected = run_golden(case.program, case.hw, image)
        check_golden(case, operands, image, expected)
    stats = run_program(case.program, case.hw, trace=True)
    check_hazards(case.program, stats.trace, case.hw.array.rows)
    check_capacity(case.program, case.hw)
    return Prepared(case, image, expected, list(stats.trace), stats.cycles)
