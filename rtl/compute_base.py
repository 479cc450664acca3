"""What the weight- and the output-stationary compute units share: the instruction's fields
kept for its duration, the N:M mode decode, and the convolution address mode (docs/isa.md,
"Convolution address mode"), the counters that turn "the next output pixel" into a slot row
(and whether it lies in the padding) without division.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed

__all__ = ["CONV_FIELDS", "ComputeBase"]

#: The convolution address mode's fields (docs/isa.md), kept for the instruction's duration.
CONV_FIELDS = ("conv", "conv_stride", "conv_in_h", "conv_in_w", "conv_out_h", "conv_out_w",
               "conv_oh0", "conv_lo", "conv_dh", "conv_dw", "conv_ow0", "conv_b", "conv_group",
               "conv_kw", "conv_kw0", "conv_t", "conv_kh", "conv_chunk_rows")


class ComputeBase:
    """Mixin of a compute unit (a component with an ``issue`` port and ``self._g``, its
    :class:`~rtl.params.Geometry`): :meth:`_conv_config` keeps the fields, ``self._field(name)``
    reads one, :meth:`_pattern_mode` decodes the N:M pattern, :meth:`_conv_address` builds the
    counters."""

    def _conv_config(self, m: Module, first, extra: tuple[str, ...] = ()) -> None:
        """Keep the convolution fields of the word (and the ``extra`` ones) for the
        instruction's duration; ``field`` reads one (from the word itself in the issue cycle)."""
        p = self.issue.instr.payload
        names = CONV_FIELDS + extra
        self._conv = cfg = {name: Signal.like(getattr(p, name), name=f"cfg_{name}")
                            for name in names}
        with m.If(first):
            m.d.sync += [cfg[name].eq(getattr(p, name)) for name in names]
        self._field = lambda name: Mux(first, getattr(p, name), cfg[name])

    def _pattern_mode(self, m: Module, first) -> Signal:
        """The instruction's mode, kept from the issue cycle on: 0 dense, ``i + 1`` the
        hardware's N:M pattern ``i``."""
        p, g = self.issue.instr.payload, self._g
        mode = Signal(range(len(g.patterns) + 1))
        decoded = Signal.like(mode)
        for index, (n, mm) in enumerate(g.patterns):
            with m.If((p.nm_n == n) & (p.nm_m == mm)):
                m.d.comb += decoded.eq(index + 1)
        with m.If(first):
            m.d.sync += mode.eq(decoded)
        return mode

    def _conv_origin(self, word, base0) -> dict:
        """The counters at the word's first pixel (``ow0`` of line ``oh0``): ``ih = oh0·s +
        dh``, ``iw = ow0·s + dw`` and the line's slot row ``base0 + (ih − lo)·in_w`` (``word``
        reads a field)."""
        ih0 = word("conv_oh0") * word("conv_stride") + word("conv_dh").as_signed()
        iw0 = word("conv_ow0") * word("conv_stride") + word("conv_dw").as_signed()
        line0 = base0 + (ih0 - word("conv_lo")) * word("conv_in_w")
        return {"ow": word("conv_ow0"), "oh": word("conv_oh0"), "ih": ih0, "iw": iw0,
                "line": line0}

    def _conv_address(self, m: Module, first, step, base0, width: int, prefix: str,
                      block=None, restart=None, start=None, delta=None):
        """The convolution address mode's counters: (slot row, in the padding) of the row read
        this cycle. Row 0 (the issue cycle) comes straight from the word (pixel ``ow0`` of
        line ``oh0``, slot row ``base0 + (ih − lo)·in_w + iw``); each read (``step``) moves
        one output pixel on: ``iw`` by the stride, at a line's end ``ih`` by the stride
        (``line`` by stride·in_w rows), at an image's end back to ``dh`` in the next image.
        With ``block`` (:meth:`_t_blocks`) and the transposing read on, a block's last read
        restarts them at the word's first pixel, at the next block's offset and chunk.
        With ``restart`` (a cycle after the issue cycle) they restart whenever it is high: at
        the word's first pixel from the kept fields, or at ``start`` (``ow, oh, ih, iw,
        line``); ``delta`` = (rows, columns) moves the kernel offset of the line and image
        wraps (the output-stationary walk over kernel offsets). The registers are left in
        ``self._conv_regs``."""
        p, field = self.issue.instr.payload, self._field
        if restart is None:
            word, restart = (lambda name: getattr(p, name)), first
        else:
            word = field
        stride, in_h, in_w = field("conv_stride"), field("conv_in_h"), field("conv_in_w")
        out_h, out_w = field("conv_out_h"), field("conv_out_w")
        dh, dw = field("conv_dh").as_signed(), field("conv_dw").as_signed()
        if delta is not None:
            dh, dw = dh + delta[0], dw + delta[1]
        t_on = Const(0)
        if block is not None:
            t_on = field("conv") & ~field("conv_b") & field("conv_t")
            _, end, krow, col, nxt_row, nxt_col, nxt_off = block
            dh, dw = dh + Mux(t_on, krow, 0), dw + Mux(t_on, col, 0)
        ow, oh = Signal(12, name=f"{prefix}_ow"), Signal(12, name=f"{prefix}_oh")
        ih, iw = Signal(signed(16), name=f"{prefix}_ih"), Signal(signed(16), name=f"{prefix}_iw")
        line, pix = Signal(signed(34), name=f"{prefix}_line"), Signal(signed(34), name=f"{prefix}_pix")
        self._conv_regs = {"ow": ow, "oh": oh, "ih": ih, "iw": iw, "line": line}
        origin = self._conv_origin(word, base0)
        ih0, iw0, line0 = origin["ih"], origin["iw"], origin["line"]
        start = start or origin
        cur_ow, cur_oh = Mux(restart, start["ow"], ow), Mux(restart, start["oh"], oh)
        cur_ih, cur_iw = Mux(restart, start["ih"], ih), Mux(restart, start["iw"], iw)
        cur_line = Mux(restart, start["line"], line)
        cur_pix = Mux(restart, start["line"] + start["iw"], pix)
        step_line = stride * in_w
        jump = (in_h - (out_h - 1) * stride) * in_w  # last line of an image → the next image's first
        plain = [  # one output pixel on: along the line, to the next line, to the next image
            (cur_ow != out_w - 1,
             [ow.eq(cur_ow + 1), iw.eq(cur_iw + stride), pix.eq(cur_pix + stride),
              oh.eq(cur_oh), ih.eq(cur_ih), line.eq(cur_line)]),
            (cur_oh != out_h - 1,
             [ow.eq(0), iw.eq(dw), oh.eq(cur_oh + 1), ih.eq(cur_ih + stride),
              line.eq(cur_line + step_line), pix.eq(cur_line + step_line + dw)]),
            (None, [ow.eq(0), iw.eq(dw), oh.eq(0), ih.eq(dh), line.eq(cur_line + jump),
                    pix.eq(cur_line + jump + dw)]),
        ]
        if block is not None:  # the word's first pixel, kept for the blocks that follow
            s_ih = Signal(signed(16), name=f"{prefix}_s_ih")
            s_iw = Signal(signed(16), name=f"{prefix}_s_iw")
            s_line = Signal(signed(34), name=f"{prefix}_s_line")
            with m.If(first):
                m.d.sync += [s_ih.eq(ih0), s_iw.eq(iw0), s_line.eq(line0)]
            r_ih, r_iw = Mux(first, ih0, s_ih), Mux(first, iw0, s_iw)
            r_line = Mux(first, line0, s_line) + nxt_off
            plain.insert(0, (t_on & end, [
                ow.eq(field("conv_ow0")), oh.eq(field("conv_oh0")), ih.eq(r_ih + nxt_row),
                iw.eq(r_iw + nxt_col), line.eq(r_line), pix.eq(r_line + r_iw + nxt_col)]))
        with m.If(step):
            for i, (cond, stmts) in enumerate(plain):
                branch = m.If(cond) if i == 0 else m.Elif(cond) if cond is not None else m.Else()
                with branch:
                    m.d.sync += stmts
        inside = (cur_ih >= 0) & (cur_ih < in_h) & (cur_iw >= 0) & (cur_iw < in_w)
        self._conv_ihw = (cur_ih, cur_iw)
        return cur_pix[:width], ~inside

    def _offset_chain(self, col0, count: int) -> list[tuple]:
        """Kernel offsets ``0 .. count`` steps on from one in kernel column ``col0``, row-major
        over a kernel ``conv_kw`` wide: per step ``j``, (its column, kernel rows down, slot
        rows on: one per column, ``in_w − kw + 1`` at a kernel-row wrap)."""
        kw, in_w = self._field("conv_kw"), self._field("conv_in_w")
        col, ddh, delta = col0, Const(0, 8), Const(0, signed(24))
        out = [(col, ddh, delta)]
        for _ in range(count):
            wrap = col + 1 == kw
            delta = Mux(wrap, delta + in_w - kw + 1, delta + 1)
            ddh = Mux(wrap, ddh + 1, ddh)
            col = Mux(wrap, 0, col + 1)
            out.append((col, ddh, delta))
        return out

    def _conv_parts(self, m: Module, conv_on, row0, pad0, group=None, kw0=None):
        """Several kernel offsets per streamed row (``conv_group > 1``, docs/isa.md): part
        ``j``'s row is part 0's plus a constant (:meth:`_offset_chain` from part 0's kernel
        column ``kw0``), its padding test part 0's with ``ih``, ``iw`` moved as much; the
        input buffer reads each part in its own bank group. ``group`` and ``kw0`` default to
        the word's. Returns whether the mode is on."""
        field, rd = self._field, self.a_rd
        group = field("conv_group") if group is None else group
        kw0 = field("conv_kw0") if kw0 is None else kw0
        in_h, in_w = field("conv_in_h"), field("conv_in_w")
        multi = conv_on & (group > 1)
        ih, iw = self._conv_ihw
        zero = [pad0]
        for j, (col, ddh, delta) in enumerate(self._offset_chain(kw0, len(rd.zero) - 1)[1:], 1):
            pi, pw = ih + ddh, iw + col - kw0
            zero.append(~((pi >= 0) & (pi < in_h) & (pw >= 0) & (pw < in_w)))
            m.d.comb += rd.more[j - 1].eq((row0 + delta)[:len(rd.row)])
        m.d.comb += [rd.parts.eq(Mux(multi, group, 0)), rd.zero.eq(Mux(multi, Cat(*zero), 0))]
        return multi
