"""Sparse-attention patterns from the literature as block masks (pure numpy).

An attention op attends ``heads`` query heads of ``q_len`` tokens over ``kv_len`` keys. Hardware
skips whole blocks, so a pattern is kept at **block granularity**: :attr:`AttentionMask.state`
holds, per (batch, head, query block, key block), whether the block is empty, partial or full
(FlexAttention's distinction between ``kv_indices`` and ``full_kv_indices``), and
:meth:`AttentionMask.block_elements` computes the element mask of one block on demand. A mask of a
4k-token prefill is then a few kilobytes, whatever the pattern.

Query ``i`` sits at absolute position ``kv_len - q_len + i`` (so decode's single query is the
newest token); a causal op hides keys after that position, and every pattern is intersected with
it. Patterns:

* dense and causal;
* sliding window + global tokens (MoA: one window per head; StreamingLLM-style sinks);
* block-sparse masks in FlexAttention ``BlockMask`` form, random or imported (``.npz`` files and
  ``torch.nn.attention.flex_attention.BlockMask`` objects; torch is imported lazily);
* BLASST threshold skipping, computed from real Q and K with the online-softmax running max;
* Double-Sparsity top-k tokens chosen by approximate scores on a few heavy channels;
* N:M on the scores (DFSS 1:2, 2:4), which the vector unit applies at run time.

Data-dependent patterns take real tensors: seeded synthetic or random ones
(:func:`synthetic_qk`) or the user's ``.npy`` files (:func:`load_qk`).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from tokenize import TokenError

import numpy as np

from workloads.arith import ceil_div
from workloads.errors import SpecError
from workloads.spec import (
    AttentionOp,
    BlasstAttention,
    BlockSparseAttention,
    DenseAttention,
    DiagonalAttention,
    ElementMaskAttention,
    GatedBlockAttention,
    Limits,
    MultiDiagonalAttention,
    QKData,
    ScoreNMAttention,
    SlidingWindowAttention,
    TopKAttention,
    VerticalSlashAttention,
    VerticalStripeAttention,
)

__all__ = [
    "EMPTY",
    "PARTIAL",
    "FULL",
    "AttentionMask",
    "build_mask",
    "causal_mask",
    "sliding_window_mask",
    "block_sparse_mask",
    "blasst_mask",
    "topk_mask",
    "score_nm_mask",
    "top_n_scores",
    "from_flex",
    "from_torch",
    "load_npz",
    "synthetic_qk",
    "load_qk",
    "qk_for",
    "reference_attention",
    "Estimate",
    "causal_block_states",
    "keys_offsets_mask",
    "KeyOffsetStates",
    "GRID_LIMIT",
    "vertical_slash_indices",
    "vertical_slash_picks",
    "vertical_slash_mask",
    "gated_block_mask",
    "element_mask",
    "load_element_mask",
]

#: Block states (uint8): no element attends, some do, all do.
EMPTY, PARTIAL, FULL = 0, 1, 2

ElementFn = Callable[[int, int, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class Estimate:
    """The scores a data-dependent pattern computes to choose its mask, as accelerator work.

    ``kind`` says which scores (``dataflows.attention_estimate`` maps each onto the array and
    the vector unit, with its DRAM traffic):

    * ``last_queries`` (vertical-slash, MInference): the last ``queries`` queries of every head
      against every key they see, over all channels, softmax included;
    * ``pooled`` (gated block, SeerAttention): Q and K average-pooled per block, then the pooled
      queries against the pooled keys over all channels, softmax included;
    * ``skipped`` (BLASST): QKᵀ and the running max of every key block a work item skips (the
      scores that decide the skip);
    * ``label_cache`` (Double Sparsity): every query against every key it sees over the
      ``channels`` heavy channels (the label cache), then a selection pass.
    """

    kind: str
    label: str
    queries: int = 0
    channels: int = 0


@dataclass(frozen=True, eq=False)
class AttentionMask:
    """Which (query, key) pairs of an attention op take part, kept per block.

    Attributes
    ----------
    state
        ``uint8[batch, heads, q_blocks, kv_blocks]``: :data:`EMPTY`, :data:`PARTIAL` or
        :data:`FULL` (of the elements that exist: the last blocks may be ragged).
    elements
        ``elements(b, h, q_idx, kv_idx)`` → ``bool[len(q_idx), len(kv_idx)]`` for query indices
        (0-based within ``q_len``) and key indices; evaluated only for partial blocks.
    kept
        Number of attending (query, key) pairs over the whole op (after ``score_nm``).
    score_nm
        ``(n, m)`` when the vector unit keeps only the top-N of every M consecutive scores of a
        query at run time (not part of ``state``: which scores survive depends on the values).
    label
        A short description for tables (``causal``, ``window 256+4``, ``blasst 1e-03``, …).
    fill
        ``uint8[q_blocks, kv_blocks]`` for patterns that skip work rather than define attention
        (BLASST): the state of a block that runs anyway because another head of the same K/V
        group needs it. Such a block is then computed for every head (closer to exact
        attention) instead of being masked. None: a skipped block stays masked.
    estimate
        The work a real implementation does to choose the mask (:class:`Estimate`), which the
        mapping charges as accelerator work; None for static patterns.
    rows
        Key-set/offset masks: the per-head descriptors (:class:`KeyOffsetStates`) that give any
        block's state; ``state`` is then None when its grid would exceed :data:`GRID_LIMIT`
        (the mapping reads rows with :meth:`row`, which works either way).
    """

    batch: int
    heads: int
    q_len: int
    kv_len: int
    block: int
    state: np.ndarray
    elements: ElementFn
    kept: int
    label: str
    score_nm: tuple[int, int] | None = None
    fill: np.ndarray | None = None
    estimate: Estimate | None = None
    rows: KeyOffsetStates | None = None

    @property
    def q_blocks(self) -> int:
        return ceil_div(self.q_len, self.block)

    @property
    def kv_blocks(self) -> int:
        return ceil_div(self.kv_len, self.block)

    @property
    def density(self) -> float:
        """Fraction of all (query, key) pairs that attend."""
        return self.kept / (self.batch * self.heads * self.q_len * self.kv_len)

    @cached_property
    def block_density(self) -> float:
        """Fraction of blocks that are not empty (the blocks the hardware must visit); counted
        once (every segment of a plan reports it)."""
        if self.state is None:
            return self.rows.nonempty() / (self.heads * self.q_blocks * self.kv_blocks)
        # A grid broadcast over batch or heads (_broadcast) is counted once, not per copy.
        once = self.state[tuple(slice(0, 1) if st == 0 else slice(None)
                                for st in self.state.strides)]
        return float(np.count_nonzero(once)) * (self.state.size // once.size) / self.state.size

    def row(self, b: int, h: int, qb: int) -> tuple[np.ndarray, np.ndarray]:
        """The non-empty key blocks of one query block of a head (sorted) and their states."""
        if self.state is None:
            return self.rows.row(h, qb)
        st = self.state[b, h, qb]
        kbs = np.flatnonzero(st)
        return kbs, st[kbs]

    def block_states(self, b: int, h: int, qbs, kbs) -> np.ndarray:
        """States of blocks ``(qbs, kbs)`` of one head (numpy broadcasting)."""
        if self.state is None:
            return self.rows.states(h, qbs, kbs)
        return self.state[b, h, qbs, kbs]

    def q_range(self, qb: int) -> tuple[int, int]:
        return qb * self.block, min(self.q_len, (qb + 1) * self.block)

    def kv_range(self, kb: int) -> tuple[int, int]:
        return kb * self.block, min(self.kv_len, (kb + 1) * self.block)

    def block_elements(self, b: int, h: int, qb: int, kb: int) -> np.ndarray:
        """``bool[q rows, kv cols]`` of one block."""
        (q0, q1), (k0, k1) = self.q_range(qb), self.kv_range(kb)
        state = self.block_states(b, h, qb, kb)
        if state != PARTIAL:
            return np.full((q1 - q0, k1 - k0), state == FULL)
        return self.elements(b, h, np.arange(q0, q1), np.arange(k0, k1))

    def dense(self) -> np.ndarray:
        """The full element mask ``bool[batch, heads, q_len, kv_len]`` (small ops only)."""
        out = np.zeros((self.batch, self.heads, self.q_len, self.kv_len), dtype=bool)
        for b, h, qb, kb in zip(*np.nonzero(self.state)):
            (q0, q1), (k0, k1) = self.q_range(qb), self.kv_range(kb)
            out[b, h, q0:q1, k0:k1] = self.block_elements(b, h, qb, kb)
        return out

    def to_flex(self) -> dict[str, np.ndarray]:
        """FlexAttention's block lists: partial blocks in ``kv_num_blocks``/``kv_indices``, full
        ones in ``full_kv_num_blocks``/``full_kv_indices`` (int32, unused entries padded with 0).
        """
        out = {}
        for prefix, wanted in (("", PARTIAL), ("full_", FULL)):
            hit = self.state == wanted
            count = hit.sum(axis=-1).astype(np.int32)
            # A stable sort of "not wanted" puts the wanted block indices first, in order.
            order = np.argsort(~hit, axis=-1, kind="stable").astype(np.int32)
            order[np.arange(self.kv_blocks) >= count[..., None]] = 0
            out[f"{prefix}kv_num_blocks"], out[f"{prefix}kv_indices"] = count, order
        return out

    def to_torch(self):
        """This mask as ``torch.nn.attention.flex_attention.BlockMask``.

        Partial blocks get a ``mask_mod`` that reads the dense element mask, so this is meant for
        the sizes one runs FlexAttention on (the dense mask takes batch·heads·q_len·kv_len bytes).
        """
        import torch
        from torch.nn.attention.flex_attention import BlockMask

        flex = {k: torch.from_numpy(v) for k, v in self.to_flex().items()}
        dense = torch.from_numpy(self.dense())

        def mask_mod(b, h, q_idx, kv_idx):
            return dense[b, h, q_idx, kv_idx]

        return BlockMask.from_kv_blocks(
            flex["kv_num_blocks"],
            flex["kv_indices"],
            flex["full_kv_num_blocks"],
            flex["full_kv_indices"],
            BLOCK_SIZE=self.block,
            mask_mod=mask_mod,
            seq_lengths=(self.q_len, self.kv_len),
        )


# --------------------------------------------------------------------------------------------
# Position arithmetic shared by the analytic patterns
# --------------------------------------------------------------------------------------------


def _block_bounds(length: int, block: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """First and last absolute position of every block of a sequence of ``length``."""
    starts = np.arange(0, length, block)
    return starts + offset, np.minimum(starts + block, length) - 1 + offset


def _band_state(q_len: int, kv_len: int, block: int, lo: float, hi: float) -> np.ndarray:
    """Block states of the band ``lo <= q_pos - kv <= hi`` (``uint8[q_blocks, kv_blocks]``).

    Over a rectangular block ``q_pos - kv`` takes every integer between its extremes, so the
    block is full when that interval lies inside the band and empty when it misses it.
    """
    q_lo, q_hi = _block_bounds(q_len, block, kv_len - q_len)
    k_lo, k_hi = _block_bounds(kv_len, block)
    # Along a row d_min = q_lo − k_hi and d_max = q_hi − k_lo fall as kb grows, so the full
    # blocks and the two empty runs are intervals of kb found by searches: no q_blocks ×
    # kv_blocks arrays of positions (a dense 1M-token grid would take 1 GiB of them).
    full_from = np.searchsorted(k_lo, q_hi - hi, "left").tolist()  # d_max <= hi
    full_to = np.searchsorted(k_hi, q_lo - lo, "right").tolist()  # d_min >= lo
    empty_to = np.searchsorted(k_hi, q_lo - hi, "left").tolist()  # d_min > hi before it
    empty_from = np.searchsorted(k_lo, q_hi - lo, "right").tolist()  # d_max < lo from it
    state = np.full((q_lo.size, k_lo.size), PARTIAL, dtype=np.uint8)
    for row, a, b, c, d in zip(state, full_from, full_to, empty_to, empty_from):
        row[a:b] = FULL  # (b <= a: none)
        row[:c] = EMPTY
        row[d:] = EMPTY
    return state


def _band_elements(kv_len: int, q_len: int, lo: float, hi: float, global_tokens: int = 0):
    def elements(q_idx: np.ndarray, kv_idx: np.ndarray) -> np.ndarray:
        d = (q_idx[:, None] + kv_len - q_len) - kv_idx[None, :]
        keep = (d >= lo) & (d <= hi)
        if global_tokens:
            sink = kv_idx[None, :] < global_tokens
            keep |= sink & (d >= 0 if lo >= 0 else True)
        return keep

    return elements


def _band_count(q_len: int, kv_len: int, lo: float, hi: float) -> int:
    """Number of (query, key) pairs with ``lo <= q_pos - kv <= hi``."""
    q_pos = np.arange(q_len, dtype=np.int64) + (kv_len - q_len)
    first = np.clip(q_pos - hi, 0, kv_len)  # smallest kv with q_pos - kv <= hi
    last = np.clip(q_pos - lo, -1, kv_len - 1)  # largest kv with q_pos - kv >= lo
    return int(np.maximum(last - first + 1, 0).sum())


def _causal_bounds(causal: bool) -> tuple[float, float]:
    return (0.0, np.inf) if causal else (-np.inf, np.inf)


def causal_block_states(q_len: int, kv_len: int, block: int, causal: bool) -> np.ndarray:
    """``uint8[q_blocks, kv_blocks]``: the blocks the causal flag leaves full, partial, empty."""
    return _band_state(q_len, kv_len, block, *_causal_bounds(causal))


def _broadcast(state: np.ndarray, batch: int, heads: int) -> np.ndarray:
    """One grid for every head, as a read-only view (a dense 1M-token grid of 28 heads held
    once takes 64 MiB, not 1.75 GiB); the mapping reuses its rows across heads."""
    return np.broadcast_to(state, (batch, heads) + state.shape[-2:])


# --------------------------------------------------------------------------------------------
# Static patterns
# --------------------------------------------------------------------------------------------


def causal_mask(
    batch: int, heads: int, q_len: int, kv_len: int, block: int, causal: bool = True
) -> AttentionMask:
    """Every key (``causal=False``) or every key up to the query's own position."""
    lo, hi = _causal_bounds(causal)
    band = _band_elements(kv_len, q_len, lo, hi)
    return AttentionMask(
        batch,
        heads,
        q_len,
        kv_len,
        block,
        _broadcast(_band_state(q_len, kv_len, block, lo, hi), batch, heads),
        lambda b, h, q, kv: band(q, kv),
        batch * heads * _band_count(q_len, kv_len, lo, hi),
        "causal" if causal else "dense",
    )


def sliding_window_mask(
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    block: int,
    windows: tuple[int, ...],
    global_tokens: int = 0,
    causal: bool = True,
) -> AttentionMask:
    """Sliding window per head plus global key tokens (MoA / StreamingLLM).

    Query ``t`` sees keys ``t-w+1 .. t`` (and, without ``causal``, also ``t+1 .. t+w-1``) plus
    keys ``0 .. global_tokens-1`` (after ``t`` only without ``causal``).
    """
    if len(windows) == 1:
        windows = windows * heads
    states, element_fns, kept = [], [], 0
    for w in windows:
        lo, hi = (0, w - 1) if causal else (-(w - 1), w - 1)
        state = _band_state(q_len, kv_len, block, lo, hi)
        fn = _band_elements(kv_len, q_len, lo, hi, global_tokens)
        count = _band_count(q_len, kv_len, lo, hi)
        if global_tokens:
            # Blocks holding global keys: the band's analytic state no longer applies there.
            n_global = ceil_div(min(global_tokens, kv_len), block)
            for qb in range(state.shape[0]):
                q0, q1 = qb * block, min(q_len, (qb + 1) * block)
                for kb in range(n_global):
                    k0, k1 = kb * block, min(kv_len, (kb + 1) * block)
                    keep = fn(np.arange(q0, q1), np.arange(k0, k1))
                    state[qb, kb] = FULL if keep.all() else PARTIAL if keep.any() else EMPTY
            # Global keys outside the band add to the count, query by query.
            q_pos = np.arange(q_len) + (kv_len - q_len)
            g = min(global_tokens, kv_len)
            seen = np.minimum(q_pos + 1, g) if causal else np.full(q_len, g)
            in_band = np.clip(
                np.minimum(q_pos - lo, g - 1) - np.maximum(q_pos - hi, 0) + 1, 0, None
            )
            count += int((seen - in_band).sum())
        states.append(state)
        element_fns.append(fn)
        kept += count
    state = np.ascontiguousarray(
        np.broadcast_to(np.stack(states), (batch, heads) + states[0].shape)
    )
    spans = sorted(set(windows))
    label = f"window {spans[0]}" if len(spans) == 1 else f"window {spans[0]}..{spans[-1]}"
    return AttentionMask(
        batch,
        heads,
        q_len,
        kv_len,
        block,
        state,
        lambda b, h, q, kv: element_fns[h](q, kv),
        batch * kept,
        label + (f"+{global_tokens} global" if global_tokens else ""),
    )


def block_sparse_mask(
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    block: int,
    density: float,
    seed: int,
    causal: bool = False,
) -> AttentionMask:
    """Random block-sparse mask: each query block keeps ``round(density · kv_blocks)`` key blocks.

    The key block holding the query block's last position (the diagonal) is always kept, so no
    query is left without keys; the others are drawn uniformly from the blocks the causal flag
    allows (seeded). Inside kept blocks the causal flag still applies element by element.
    """
    lo, hi = _causal_bounds(causal)
    base = _band_state(q_len, kv_len, block, lo, hi)
    nqb, nkb = base.shape
    want = max(1, round(density * nkb))
    rng = np.random.default_rng([seed, batch, heads, q_len, kv_len, block])
    state = np.zeros((batch, heads, nqb, nkb), dtype=np.uint8)
    q_last = np.minimum((np.arange(nqb) + 1) * block, q_len) - 1 + (kv_len - q_len)
    diagonal = np.minimum(q_last // block, nkb - 1)
    for b in range(batch):
        for h in range(heads):
            for qb in range(nqb):
                allowed = np.flatnonzero(base[qb])
                others = allowed[allowed != diagonal[qb]]
                pick = rng.choice(others, size=min(want - 1, others.size), replace=False)
                keep = np.append(pick, diagonal[qb]).astype(np.intp)
                state[b, h, qb, keep] = base[qb, keep]
    band = _band_elements(kv_len, q_len, lo, hi)
    kept = _kept_by_blocks(state, band, q_len, kv_len, block)
    return AttentionMask(
        batch,
        heads,
        q_len,
        kv_len,
        block,
        state,
        lambda b, h, q, kv: band(q, kv),
        kept,
        f"block-sparse {density:g}",
    )


def _kept_by_blocks(state: np.ndarray, band, q_len: int, kv_len: int, block: int) -> int:
    """Attending pairs of a block mask whose partial blocks follow ``band`` (causal or all)."""
    q_sizes = np.diff(np.minimum(np.arange(0, q_len + block, block), q_len))[: state.shape[2]]
    k_sizes = np.diff(np.minimum(np.arange(0, kv_len + block, block), kv_len))[: state.shape[3]]
    areas = q_sizes[:, None] * k_sizes[None, :]
    kept = int((areas * (state == FULL)).sum())
    for _, _, qb, kb in zip(*np.nonzero(state == PARTIAL)):
        q0, k0 = qb * block, kb * block
        kept += int(band(np.arange(q0, q0 + q_sizes[qb]), np.arange(k0, k0 + k_sizes[kb])).sum())
    return kept


def from_flex(
    kv_num_blocks: np.ndarray,
    kv_indices: np.ndarray,
    full_kv_num_blocks: np.ndarray | None,
    full_kv_indices: np.ndarray | None,
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    block: int,
    causal: bool,
    elements: ElementFn | None = None,
    label: str = "block-sparse",
) -> AttentionMask:
    """A mask from FlexAttention block lists (batch and head dimensions of 1 broadcast).

    Listed blocks take part; inside partial blocks ``elements`` decides (default: the causal
    flag, i.e. FlexAttention's no-op ``mask_mod``), inside full blocks every pair the causal flag
    allows does.

    Raises
    ------
    SpecError
        If the arrays do not describe this op's blocks.
    """
    nqb, nkb = ceil_div(q_len, block), ceil_div(kv_len, block)
    lists = [(kv_num_blocks, kv_indices, PARTIAL)]
    if (full_kv_num_blocks is None) != (full_kv_indices is None):
        raise SpecError("give both full_kv_num_blocks and full_kv_indices, or neither")
    if full_kv_num_blocks is not None:
        lists.append((full_kv_num_blocks, full_kv_indices, FULL))
    state = np.zeros((batch, heads, nqb, nkb), dtype=np.uint8)
    for num, idx, value in lists:
        num, idx = np.asarray(num), np.asarray(idx)
        for array, name in ((num, "kv_num_blocks"), (idx, "kv_indices")):
            if array.dtype.kind not in "iu":
                raise SpecError(f"{name} has dtype {array.dtype}; expected integers")
        if num.ndim != 3 or idx.ndim != 4 or num.shape[2] != nqb or idx.shape[:3] != num.shape:
            raise SpecError(
                f"expected kv_num_blocks [B, H, {nqb}] and kv_indices [B, H, {nqb}, n] for "
                f"q_len={q_len} in blocks of {block}, got {num.shape} and {idx.shape}"
            )
        if num.shape[0] not in (1, batch) or num.shape[1] not in (1, heads):
            raise SpecError(
                f"block lists of shape {num.shape} do not fit batch={batch}, heads={heads}"
            )
        if num.size and (num.min() < 0 or num.max() > idx.shape[3]):
            raise SpecError(f"kv_num_blocks must lie in 0..{idx.shape[3]}")
        used = np.arange(idx.shape[3]) < num[..., None]
        if np.any(used & ((idx < 0) | (idx >= nkb))):
            raise SpecError(f"kv_indices must lie in 0..{nkb - 1} for kv_len={kv_len}")
        one = np.zeros(num.shape + (nkb,), dtype=bool)
        bi, hi_, qi, j = np.nonzero(used)
        one[bi, hi_, qi, idx[bi, hi_, qi, j]] = True
        state[np.broadcast_to(one, state.shape)] = value
    lo, hi = _causal_bounds(causal)
    base = _band_state(q_len, kv_len, block, lo, hi)
    band = _band_elements(kv_len, q_len, lo, hi)
    # Causality still applies: blocks it empties go, full blocks it cuts become partial.
    state = np.where(
        base == EMPTY, EMPTY, np.where((state == FULL) & (base == PARTIAL), PARTIAL, state)
    )
    state = state.astype(np.uint8)
    if elements is None:
        fn = lambda b, h, q, kv: band(q, kv)  # noqa: E731
        kept = _kept_by_blocks(state, band, q_len, kv_len, block)
    else:
        fn = lambda b, h, q, kv: elements(b, h, q, kv) & band(q, kv)  # noqa: E731
        areas_full = _kept_by_blocks(
            np.where(state == FULL, FULL, EMPTY), band, q_len, kv_len, block
        )
        kept = areas_full + sum(
            int(
                fn(
                    b,
                    h,
                    np.arange(*_range(qb, block, q_len)),
                    np.arange(*_range(kb, block, kv_len)),
                ).sum()
            )
            for b, h, qb, kb in zip(*np.nonzero(state == PARTIAL))
        )
    return AttentionMask(batch, heads, q_len, kv_len, block, state, fn, kept, label)


def _range(i: int, block: int, length: int) -> tuple[int, int]:
    return i * block, min(length, (i + 1) * block)


#: Largest array read from a ``.npy``/``.npz`` file, in elements (the default of
#: ``limits.array_elements``); checked on the array's header, before its data is read.
MAX_FILE_ELEMENTS = Limits().array_elements

_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_array(fh, where: str, expected: str, kinds: str, shape: tuple | None = None):
    """One ``.npy`` array from an open binary file, checked header first.

    ``kinds`` are the numpy dtype kinds accepted (``"fiu"``: real numbers, ``"iu"``: integers);
    ``shape``, if given, must match before the data is read. Every failure is one SpecError
    naming ``where`` and what was ``expected``.
    """
    try:
        version = np.lib.format.read_magic(fh)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        with warnings.catch_warnings():  # a damaged header can look like Python 2's
            warnings.simplefilter("ignore")
            found_shape, fortran, dtype = header(fh)
    except (ValueError, OSError, EOFError, SyntaxError, TokenError, TypeError) as exc:
        raise SpecError(f"{where}: not a valid .npy array ({_one_line(exc)}); expected "
                        f"{expected}") from None
    if dtype.hasobject or dtype.kind not in kinds:
        what = {"iu": "integers", "biu": "booleans or integers"}.get(kinds, "real numbers")
        raise SpecError(f"{where}: dtype {dtype} is not {what}; expected {expected}")
    elements = int(np.prod(found_shape, dtype=object))
    if elements > MAX_FILE_ELEMENTS:
        raise SpecError(f"{where}: shape {found_shape} has {elements:,} elements, above the "
                        f"{MAX_FILE_ELEMENTS:,} a file array may hold; expected {expected}")
    if shape is not None and tuple(found_shape) != tuple(shape):
        raise SpecError(f"{where}: shape {tuple(found_shape)}; expected {expected} of shape "
                        f"{tuple(shape)}")
    count = elements
    data = fh.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise SpecError(f"{where}: truncated: {len(data):,} of {count * dtype.itemsize:,} data "
                        f"bytes; expected {expected}")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(found_shape, order="F" if fortran else "C")


def _open_array(path: str, expected: str, kinds: str, shape: tuple | None = None) -> np.ndarray:
    """``path`` as one ``.npy`` array (an ``.npz`` archive or any other file is refused)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == _ZIP_MAGIC:
                raise SpecError(f"{path}: an .npz archive; expected {expected} as one .npy array")
            fh.seek(0)
            return _read_array(fh, path, expected, kinds, shape)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}; expected {expected}") from None


def _open_archive(path: str, names: tuple[str, ...], required: set[str]) -> dict[str, np.ndarray]:
    """The integer arrays ``names`` of an ``.npz`` archive (those in ``required`` must exist)."""
    import zipfile

    expected = "an .npz archive (numpy.savez) of FlexAttention block lists"
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
        if head.startswith(_NPY_MAGIC):
            raise SpecError(f"{path}: a single .npy array; expected {expected}")
        with zipfile.ZipFile(path) as archive:
            members = {n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")}
            missing = required - members
            if missing:
                raise SpecError(f"{path}: missing arrays {sorted(missing)} (have "
                                f"{sorted(members)}); expected {expected}")
            arrays = {}
            for name in names:
                if name in members:
                    with archive.open(f"{name}.npy") as fh:
                        arrays[name] = _read_array(fh, f"{path}: {name}", "integer block lists",
                                                   "iu")
            return arrays
    # Any archive damage: NotImplementedError for unknown compression, RuntimeError for
    # encryption, zlib.error for corrupt deflate data.
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError,
            zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or _one_line(exc)
        raise SpecError(f"{path}: cannot read ({reason}); expected {expected}") from None


def load_npz(
    path: str, batch: int, heads: int, q_len: int, kv_len: int, block: int, causal: bool
) -> AttentionMask:
    """A block mask saved with ``numpy.savez`` in FlexAttention form (see :func:`from_flex`)."""
    data = _open_archive(
        path, ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"),
        {"kv_num_blocks", "kv_indices"},
    )
    full = [data.get(k) for k in ("full_kv_num_blocks", "full_kv_indices")]
    try:
        return from_flex(
            data["kv_num_blocks"],
            data["kv_indices"],
            *full,
            batch=batch,
            heads=heads,
            q_len=q_len,
            kv_len=kv_len,
            block=block,
            causal=causal,
            label="block-sparse file",
        )
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def from_torch(
    block_mask, causal: bool = False, batch: int | None = None, heads: int | None = None
) -> AttentionMask:
    """A mask from a ``torch.nn.attention.flex_attention.BlockMask`` (its ``mask_mod`` decides
    inside partial blocks). ``batch``/``heads`` broadcast a mask built with B or H of 1.
    """
    import torch

    q_len, kv_len = block_mask.seq_lengths
    q_block, kv_block = block_mask.BLOCK_SIZE
    if q_block != kv_block:
        raise SpecError(f"the mapping uses square blocks; got Q {q_block} x KV {kv_block}")
    num = block_mask.kv_num_blocks.cpu().numpy()
    batch = batch or num.shape[0]
    heads = heads or num.shape[1]
    mask_mod = block_mask.mask_mod

    def elements(b: int, h: int, q_idx: np.ndarray, kv_idx: np.ndarray) -> np.ndarray:
        bb = min(b, num.shape[0] - 1)
        hh = min(h, num.shape[1] - 1)
        with torch.no_grad():
            out = mask_mod(
                torch.tensor(bb),
                torch.tensor(hh),
                torch.from_numpy(q_idx)[:, None],
                torch.from_numpy(kv_idx)[None, :],
            )
        return np.broadcast_to(out.cpu().numpy().astype(bool), (q_idx.size, kv_idx.size))

    full = (None, None)
    if block_mask.full_kv_num_blocks is not None:
        full = (
            block_mask.full_kv_num_blocks.cpu().numpy(),
            block_mask.full_kv_indices.cpu().numpy(),
        )
    return from_flex(
        num,
        block_mask.kv_indices.cpu().numpy(),
        *full,
        batch=batch,
        heads=heads,
        q_len=q_len,
        kv_len=kv_len,
        block=q_block,
        causal=causal,
        elements=elements,
        label="flex BlockMask",
    )


# --------------------------------------------------------------------------------------------
# Data-dependent patterns
# --------------------------------------------------------------------------------------------


#: Score (log units) of a query at its own position and at the sink in :func:`synthetic_qk`.
_PEAK = 20.0


def synthetic_qk(
    batch: int,
    heads: int,
    kv_heads: int,
    q_len: int,
    kv_len: int,
    head_dim: int,
    seed: int,
    structured: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Q [batch, heads, q_len, d] and K [batch, kv_heads, kv_len, d] (float32).

    ``structured=False`` gives i.i.d. standard normals. ``structured=True`` adds what trained
    attention shows and what the patterns exploit (this is synthetic, not measured): up to 16
    rotary-style channel pairs, periods from 8 to 32k tokens, whose cosines add up to a peak at
    the query's own position that decays with distance (locality; these are Double Sparsity's
    heavy channels); one channel that makes key 0 an attention sink; a per-head gain between
    0.2 and 1.4 that makes some heads broad and others sharp. Scores ``q·k/√d`` reach
    :data:`_PEAK` (+20) times the gain at the diagonal and the sink, over a background of
    standard deviation of a few units: sharp heads leave threshold skipping work to skip, broad
    ones do not.
    """
    rng = np.random.default_rng([seed, batch, heads, kv_heads, q_len, kv_len, head_dim])
    q = rng.standard_normal((batch, heads, q_len, head_dim), dtype=np.float32)
    k = rng.standard_normal((batch, kv_heads, kv_len, head_dim), dtype=np.float32)
    pairs = min(16, (head_dim - 2) // 2)
    if not structured or pairs < 2:
        return q, k
    amp = np.sqrt(_PEAK * np.sqrt(head_dim) / pairs)
    periods = np.geomspace(8.0, 32768.0, pairs)
    q_pos = np.arange(q_len) + (kv_len - q_len)
    k_pos = np.arange(kv_len)
    gains = rng.uniform(0.2, 1.4, size=heads).astype(np.float32)[None, :, None]
    sink = 2 * pairs
    # K's structured channels are written in one pass over its rows (channel by channel, the
    # strided writes crossed a million-token K 33 times); the same float32 values.
    k_cols = np.empty((sink + 1, kv_len), dtype=np.float32)
    for i, period in enumerate(periods):
        w = 2 * np.pi / period
        q[..., 2 * i] = amp * np.cos(w * q_pos) * gains
        q[..., 2 * i + 1] = amp * np.sin(w * q_pos) * gains
        k_cols[2 * i] = amp * np.cos(w * k_pos)
        k_cols[2 * i + 1] = amp * np.sin(w * k_pos)
    q[..., sink] = amp * gains
    k_cols[sink] = 0.0
    k[..., : sink + 1] = k_cols.T
    k[:, :, 0, sink] = amp * pairs
    return q, k


def load_qk(data: QKData, op: AttentionOp) -> tuple[np.ndarray, np.ndarray]:
    """The user's Q and K arrays, checked against the op's shape (float32)."""
    shapes = {
        "q": (op.batch, op.heads, op.queries, op.head_dim),
        "k": (op.batch, op.groups, op.kv_len, op.head_dim),
    }
    out = []
    for name in ("q", "k"):
        path = getattr(data, name)
        dims = "heads, q_len" if name == "q" else "kv_heads, kv_len"
        expected = f"{op.name}'s {name}, real numbers [batch, {dims}, head_dim]"
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused below
            array = _open_array(path, expected, "fiu", shapes[name]).astype(np.float32)
        bad = np.argwhere(~np.isfinite(array))
        if bad.size:  # a NaN or infinity would silently decide the pattern
            raise SpecError(f"{path}: {name}{bad[0].tolist()} is {array[tuple(bad[0])]}; expected "
                            f"finite values (within float32)")
        out.append(array)
    return out[0], out[1]


def qk_for(data: QKData, op: AttentionOp) -> tuple[np.ndarray, np.ndarray]:
    """Q and K for a data-dependent pattern of ``op`` (synthetic, random or from files)."""
    if data.source == "npy":
        return load_qk(data, op)
    return synthetic_qk(
        op.batch,
        op.heads,
        op.groups,
        op.queries,
        op.kv_len,
        op.head_dim,
        data.seed,
        structured=data.source == "synthetic",
    )


def _scores(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    return (q @ k.T) * np.float32(1.0 / np.sqrt(q.shape[-1]))


def blasst_mask(
    q: np.ndarray, k: np.ndarray, block: int, threshold: float, causal: bool
) -> AttentionMask:
    """BLASST: skip a key block when no query of the query block would notice it.

    Key blocks are visited in order, as FlashAttention does; each query keeps the running max
    ``m`` of its scores (``q·k/√d``). A block is skipped when, for every query of the query
    block, ``exp(block max − m) < threshold``; otherwise it runs and updates ``m``. The first
    block a query block visits always runs.
    """
    batch, heads, q_len, _ = q.shape
    kv_len, group = k.shape[2], heads // k.shape[1]
    lo, hi = _causal_bounds(causal)
    base = _band_state(q_len, kv_len, block, lo, hi)
    band = _band_elements(kv_len, q_len, lo, hi)
    nqb, nkb = base.shape
    state = np.zeros((batch, heads, nqb, nkb), dtype=np.uint8)
    log_t = np.log(threshold)
    for b in range(batch):
        for h in range(heads):
            kh = k[b, h // group]
            for qb in range(nqb):
                q0, q1 = qb * block, min(q_len, (qb + 1) * block)
                allowed = np.flatnonzero(base[qb])
                k_end = min(kv_len, (allowed[-1] + 1) * block) if allowed.size else 0
                s = _scores(q[b, h, q0:q1], kh[:k_end])
                if causal:
                    s = np.where(band(np.arange(q0, q1), np.arange(k_end)), s, -np.inf)
                running = np.full(q1 - q0, -np.inf, dtype=np.float32)
                for kb in allowed:
                    block_max = s[:, kb * block : min(k_end, (kb + 1) * block)].max(axis=1)
                    live = np.isfinite(block_max)
                    if np.isfinite(running).any() and np.all(
                        block_max[live] - running[live] < log_t
                    ):
                        continue
                    state[b, h, qb, kb] = base[qb, kb]
                    running = np.maximum(running, block_max)
    kept = _kept_by_blocks(state, band, q_len, kv_len, block)
    return AttentionMask(
        batch,
        heads,
        q_len,
        kv_len,
        block,
        state,
        lambda b, h, q_, kv: band(q_, kv),
        kept,
        f"blasst {threshold:g}",
        fill=base,
        estimate=Estimate("skipped", "QKᵀ of skipped blocks"),
    )


def _heavy_channels(q: np.ndarray, k: np.ndarray, count: int) -> np.ndarray:
    """Per query head, the ``count`` channels with the largest mean |q|·mean |k| (calibration)."""
    group = q.shape[1] // k.shape[1]
    weight = np.abs(q).mean(axis=(0, 2)) * np.repeat(np.abs(k).mean(axis=(0, 2)), group, axis=0)
    return np.argsort(-weight, axis=1, kind="stable")[:, :count]


def topk_mask(
    q: np.ndarray, k: np.ndarray, block: int, tokens: int, channels: int, causal: bool
) -> AttentionMask:
    """Double Sparsity: each query keeps its ``tokens`` best keys by approximate score.

    The approximate score uses only the ``channels`` heaviest channels of Q and K (chosen per
    head from the tensors themselves, standing in for offline calibration). Keys the causal flag
    hides are never chosen; a query with fewer visible keys keeps them all.
    """
    batch, heads, q_len, _ = q.shape
    kv_len, group = k.shape[2], heads // k.shape[1]
    lo, hi = _causal_bounds(causal)
    band = _band_elements(kv_len, q_len, lo, hi)
    chosen = _heavy_channels(q, k, channels)
    nqb, nkb = ceil_div(q_len, block), ceil_div(kv_len, block)
    sel = np.full((batch, heads, q_len, min(tokens, kv_len)), -1, dtype=np.int32)
    counts = np.zeros((batch, heads, nqb, nkb), dtype=np.int64)
    for b in range(batch):
        for h in range(heads):
            ch = chosen[h]
            kh = np.ascontiguousarray(k[b, h // group][:, ch].T)
            for qb in range(nqb):
                q0, q1 = qb * block, min(q_len, (qb + 1) * block)
                # Causal queries see a prefix of the keys: score only that prefix.
                k_end = min(kv_len, q1 + kv_len - q_len) if causal else kv_len
                s = q[b, h, q0:q1][:, ch] @ kh[:, :k_end]
                visible = band(np.arange(q0, q1), np.arange(k_end))
                s = np.where(visible, s, -np.inf)
                take = min(tokens, k_end)
                top = np.argpartition(-s, take - 1, axis=1)[:, :take]
                ok = np.take_along_axis(visible, top, axis=1)
                top = np.where(ok, top, -1).astype(np.int32)
                sel[b, h, q0:q1, :take] = top
                rows, cols = np.nonzero(ok)
                flat = ((q0 + rows) // block) * nkb + top[rows, cols] // block
                counts[b, h] += np.bincount(flat, minlength=nqb * nkb).reshape(nqb, nkb)
    q_sizes = np.diff(np.minimum(np.arange(0, q_len + block, block), q_len))[:nqb]
    k_sizes = np.diff(np.minimum(np.arange(0, kv_len + block, block), kv_len))[:nkb]
    state = np.where(
        counts == 0, EMPTY, np.where(counts == q_sizes[:, None] * k_sizes[None, :], FULL, PARTIAL)
    )

    def elements(b: int, h: int, q_idx: np.ndarray, kv_idx: np.ndarray) -> np.ndarray:
        rows = sel[b, h, q_idx]
        inside = (rows >= kv_idx[0]) & (rows <= kv_idx[-1])
        out = np.zeros((q_idx.size, kv_idx.size), dtype=bool)
        r, c = np.nonzero(inside)
        out[r, rows[r, c] - kv_idx[0]] = True
        return out

    kept = int(np.count_nonzero(sel >= 0))
    return AttentionMask(
        batch,
        heads,
        q_len,
        kv_len,
        block,
        state.astype(np.uint8),
        elements,
        kept,
        f"top-{tokens} tokens/{channels}ch",
        estimate=Estimate("label_cache", f"label cache, {channels} channels", channels=channels),
    )


def top_n_scores(x: np.ndarray, keep: np.ndarray, n: int, m: int) -> np.ndarray:
    """Which keys N:M on scores keeps along the last axis: the top N of every M consecutive keys
    by score, ties to the lower key. Masked keys (``keep`` False) rank below every kept score,
    and a cut last group is padded with masked keys, so the result has the padded length (a
    multiple of M) and exactly N chosen keys per group, masked ones too where a group keeps
    fewer (docs/isa.md, EXP). The one definition the golden model and the tests share.
    """
    x = np.asarray(x, dtype=np.int64)
    # Below every score; not int64's minimum, whose negation in the sort overflows to itself.
    low = x.min(initial=0) - 1
    pad = [(0, 0)] * (x.ndim - 1) + [(0, -x.shape[-1] % m)]
    key = np.pad(np.where(keep, x, low), pad, constant_values=low)
    grouped = key.reshape(*key.shape[:-1], -1, m)
    chosen = np.zeros(grouped.shape, dtype=bool)
    np.put_along_axis(chosen, np.argsort(-grouped, axis=-1, kind="stable")[..., :n], True, -1)
    return chosen.reshape(key.shape)


def score_nm_mask(
    batch: int, heads: int, q_len: int, kv_len: int, block: int, n: int, m: int, causal: bool
) -> AttentionMask:
    """N:M on the scores (DFSS): the causal (or full) blocks, of which the vector unit keeps the
    top-N of every M consecutive keys per query. ``kept`` counts the survivors: N per whole
    group of M visible keys, and up to N of a group the causal edge or ``kv_len`` cuts.
    """
    base = causal_mask(batch, heads, q_len, kv_len, block, causal)
    q_pos = np.arange(q_len, dtype=np.int64) + (kv_len - q_len)
    visible = np.minimum(q_pos + 1, kv_len) if causal else np.full(q_len, kv_len)
    kept = int((visible // m * n + np.minimum(visible % m, n)).sum()) * batch * heads
    return AttentionMask(
        batch,
        heads,
        q_len,
        kv_len,
        block,
        base.state,
        base.elements,
        kept,
        f"{n}:{m} scores" + (" causal" if causal else ""),
        score_nm=(n, m),
    )


# --------------------------------------------------------------------------------------------
# Key sets and offset sets: vertical-slash and the Sparse-vDiT patterns
# --------------------------------------------------------------------------------------------


def _offset_state(offsets: np.ndarray, q_len: int, kv_len: int, block: int) -> np.ndarray:
    """Block states of the offset set ``offsets`` (bool over ``d = q_pos − k`` from
    ``−kv_len + 1``, index ``d + kv_len − 1``).

    Over a rectangular block ``d`` takes every integer from ``d_min`` to ``d_max``: the block is
    empty when no offset lies in that range and full when all of them do. Runs of offsets are
    entered as ranges of key blocks per query block (difference arrays), so the cost grows with
    the number of runs, not with the number of blocks times offsets.
    """
    q_lo, q_hi = _block_bounds(q_len, block, kv_len - q_len)
    k_lo, k_hi = _block_bounds(kv_len, block)
    nqb, nkb = q_lo.size, k_lo.size
    edges = np.diff(np.concatenate(([0], offsets.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    base = kv_len - 1
    touched = np.zeros((nqb, nkb + 1), dtype=np.int32)
    covered = np.zeros((nqb, nkb + 1), dtype=np.int32)
    rows = np.arange(nqb)
    for a, b in zip(starts - base, ends - base):
        # touched: d_min <= b and d_max >= a, i.e. k_hi >= q_lo - b and k_lo <= q_hi - a
        first = np.searchsorted(k_hi, q_lo - b, side="left")
        last = np.searchsorted(k_lo, q_hi - a, side="right")
        # Each row appears once per statement, so fancy-indexed += adds every entry (no
        # ufunc.at needed, which was most of a 262k-token grid's cost).
        ok = first < last
        touched[rows[ok], first[ok]] += 1
        touched[rows[ok], last[ok]] -= 1
        # covered: d_min >= a and d_max <= b, i.e. k_hi <= q_lo - a and k_lo >= q_hi - b
        first = np.searchsorted(k_lo, q_hi - b, side="left")
        last = np.searchsorted(k_hi, q_lo - a, side="right")
        ok = first < last
        covered[rows[ok], first[ok]] += 1
        covered[rows[ok], last[ok]] -= 1
    state = np.where(np.cumsum(touched, axis=1)[:, :nkb] > 0, PARTIAL, EMPTY).astype(np.uint8)
    state[np.cumsum(covered, axis=1)[:, :nkb] > 0] = FULL
    return state


def _key_state(keys: np.ndarray, base: np.ndarray, kv_len: int, block: int) -> np.ndarray:
    """Block states of a key set (bool over keys) under the causal ``base`` states."""
    nkb = base.shape[1]
    padded = np.zeros(nkb * block, dtype=bool)
    padded[:kv_len] = keys
    per_block = padded.reshape(nkb, block).sum(axis=1)
    sizes = np.diff(np.minimum(np.arange(0, (nkb + 1) * block, block), kv_len))
    state = np.where(per_block > 0, PARTIAL, EMPTY).astype(np.uint8)[None, :].repeat(
        base.shape[0], axis=0)
    full_cols = per_block == sizes
    state[:, full_cols] = base[:, full_cols]
    state[base == EMPTY] = EMPTY
    return state


def _band_cells(d_min: np.ndarray, d_max: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``uint8`` band states of blocks whose ``q_pos − k`` spans ``d_min .. d_max`` (integers):
    full inside ``lo <= d <= hi``, empty outside. An infinite bound is not compared (an int64
    array against a float is converted to float64 first)."""
    full = np.ones(np.broadcast(d_min, d_max).shape, dtype=bool)
    empty = np.zeros_like(full)
    if np.isfinite(lo):
        full &= d_min >= math.ceil(lo)
        empty |= d_max < math.ceil(lo)
    if np.isfinite(hi):
        full &= d_max <= math.floor(hi)
        empty |= d_min > math.floor(hi)
    band = np.where(full, np.uint8(FULL), np.uint8(PARTIAL))
    band[empty] = EMPTY
    return band


#: Largest block grid (``batch · heads · q_blocks · kv_blocks`` bytes) a key/offset mask keeps;
#: beyond it the mask keeps its per-head descriptors (:class:`KeyOffsetStates`) instead.
GRID_LIMIT = 1 << 28

#: Query-block rows a :class:`KeyOffsetStates` classifies in one call.
_ROWS_AT_ONCE = 256


@dataclass(frozen=True, eq=False)
class KeyOffsetStates:
    """Block states of a key-set/offset-set mask (:func:`keys_offsets_mask`) computed where
    asked from per-head descriptors, never as a grid: a million-token prefill of 28 heads
    would need 1.75 GiB of grid, the descriptors take a few bytes a key.

    A block is classified as the grid is: its keys (``key_count`` of the key set among its
    keys: none, some, all), its offsets (how many offsets of ``q_pos − k`` over the block are in
    the set, from ``off_prefix``), both under the causal band. ``key_blocks`` and
    ``diagonals`` (per head: key blocks holding a key of the set; ``t = qb − kb`` whose
    full-sized block touches an offset, a superset for ragged ones) give a query block's
    candidates, so a row costs its visited blocks, not ``kv_blocks``.
    """

    q_len: int
    kv_len: int
    block: int
    lo: float
    hi: float
    key_count: np.ndarray
    off_prefix: np.ndarray
    key_blocks: tuple
    diagonals: tuple
    counts: np.ndarray  # int64[heads, q_blocks]: non-empty blocks per row, -1 until computed
    cache: dict  # the last run of rows computed (``row``)

    @classmethod
    def of(cls, keys: np.ndarray, offsets: np.ndarray, q_len: int, kv_len: int, block: int,
           lo: float, hi: float) -> KeyOffsetStates:
        heads, nkb = keys.shape[0], ceil_div(kv_len, block)
        padded = np.zeros((heads, nkb * block), dtype=bool)
        padded[:, :kv_len] = keys
        key_count = padded.reshape(heads, nkb, block).sum(axis=2, dtype=np.int32)
        off_prefix = np.zeros((heads, offsets.shape[1] + 1), dtype=np.int32)
        for h in range(heads):  # a cumsum casting bool rows in place was 15x slower
            np.cumsum(offsets[h].astype(np.int32), out=off_prefix[h, 1:])
        nqb = ceil_div(q_len, block)
        t = np.arange(-(nkb - 1), nqb)
        centre = t * block + (kv_len - q_len) + kv_len - 1  # index of q_lo - k_lo
        lo_i = np.clip(centre - (block - 1), 0, offsets.shape[1])
        hi_i = np.clip(centre + block, 0, offsets.shape[1])
        diagonals = tuple(t[(p[hi_i] - p[lo_i]) > 0] for p in off_prefix)
        key_blocks = tuple(np.flatnonzero(c) for c in key_count)
        return cls(q_len, kv_len, block, lo, hi, key_count, off_prefix, key_blocks, diagonals,
                   np.full((heads, nqb), -1, dtype=np.int64), {})

    def states(self, h: int, qbs, kbs) -> np.ndarray:
        """``uint8`` states of blocks ``(qbs, kbs)`` of head ``h`` (numpy broadcasting).
        Classified in ``uint8`` (a million-token prefill classifies 229 M candidates)."""
        b, shift, u8 = self.block, self.kv_len - self.q_len, np.uint8
        qbs, kbs = np.asarray(qbs, dtype=np.int64), np.asarray(kbs, dtype=np.int64)
        k_lo, k_hi = kbs * b, np.minimum((kbs + 1) * b, self.kv_len) - 1
        d_min = qbs * b + shift - k_hi
        d_max = np.minimum((qbs + 1) * b, self.q_len) - 1 + shift - k_lo
        band = _band_cells(d_min, d_max, self.lo, self.hi)
        p, base = self.off_prefix[h], self.kv_len - 1
        top = p.size - 1
        hit = p[np.clip(d_max + base + 1, 0, top)] - p[np.clip(d_min + base, 0, top)]
        off = np.where(hit == 0, u8(EMPTY), np.where(hit == d_max - d_min + 1, u8(FULL),
                                                      u8(PARTIAL)))
        kc = self.key_count[h][kbs]
        key = np.where(kc == 0, u8(EMPTY), np.where(kc == k_hi - k_lo + 1, band, u8(PARTIAL)))
        st = np.maximum(off, key)
        st[band == EMPTY] = EMPTY
        st[(st == FULL) & (band == PARTIAL)] = PARTIAL
        return st

    def row(self, h: int, qb: int) -> tuple[np.ndarray, np.ndarray]:
        """The non-empty key blocks of query block ``qb`` of head ``h`` (sorted) and states.

        Rows are computed :data:`_ROWS_AT_ONCE` query blocks at a time (numpy's per-call cost
        over 229k rows of a million-token prefill is what a row at a time cost) and the last
        such run is kept: the mapping asks for a head's rows in order."""
        lo = qb - qb % _ROWS_AT_ONCE
        if self.cache.get("at") != (h, lo):
            self.cache["at"] = (h, lo)
            self.cache["rows"] = self.rows(h, lo, min(lo + _ROWS_AT_ONCE, self.counts.shape[1]))
        return self.cache["rows"][qb - lo]

    def rows(self, h: int, qb0: int, qb1: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`row` of query blocks ``qb0 .. qb1-1``."""
        k, st, bounds = self.flat(h, qb0, qb1)
        return [(k[i:j], st[i:j]) for i, j in zip(bounds[:-1].tolist(), bounds[1:].tolist())]

    def flat(self, h: int, qb0: int, qb1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows of query blocks ``qb0 .. qb1-1`` back to back: key blocks, states, and the
        ``qb1 − qb0 + 1`` bounds of each row in them. Candidates (visible key blocks of the key
        set, key blocks on a touched diagonal) as one flat array, classified at once."""
        nkb, b = self.key_count.shape[1], self.block
        qbs = np.arange(qb0, qb1)
        keys = self.key_blocks[h]
        n_keys = np.full(qbs.size, keys.size)
        if np.isfinite(self.lo):  # keys past the band's last visible key cannot be visited
            q_hi = np.minimum((qbs + 1) * b, self.q_len) - 1 + self.kv_len - self.q_len
            n_keys = np.searchsorted(keys, (q_hi - self.lo) // b, side="right")
        kq = np.repeat(qbs, n_keys)
        kk = keys[np.arange(kq.size) - np.repeat(np.cumsum(n_keys) - n_keys, n_keys)]
        t = self.diagonals[h][::-1]  # qb - t ascending
        dq = np.repeat(qbs, t.size)
        dk = dq - np.tile(t, qbs.size)
        ok = (dk >= 0) & (dk < nkb)
        # Two sorted runs: a stable sort merges them in linear time; then drop repeats.
        code = np.sort(np.concatenate([kq * nkb + kk, dq[ok] * nkb + dk[ok]]), kind="stable")
        code = code[np.concatenate(([True], code[1:] != code[:-1]))] if code.size else code
        q, k = np.divmod(code, nkb)
        st = self.states(h, q, k)
        keep = st != EMPTY
        q, k, st = q[keep], k[keep], st[keep]
        bounds = np.searchsorted(q, np.arange(qb0, qb1 + 1))
        self.counts[h, qb0:qb1] = np.diff(bounds)
        return k, st, bounds

    def nonempty(self) -> int:
        """Non-empty blocks of one batch element (every row computed once)."""
        for h, qb in zip(*np.nonzero(self.counts < 0)):
            if self.counts[h, qb] < 0:  # not counted by an earlier run of rows
                self.row(int(h), int(qb))
        return int(self.counts.sum())


def _keys_offsets_count(keys: np.ndarray, offsets: np.ndarray, q_len: int, kv_len: int,
                        causal: bool) -> int:
    """Attending pairs of one head's ``keys ∪ offsets`` (offsets already cut to ``d >= 0`` when
    causal): pairs by offset, plus visible key-set members, minus pairs counted twice."""
    q_pos = np.arange(q_len, dtype=np.int64) + (kv_len - q_len)
    off_prefix = np.concatenate(([0], np.cumsum(offsets, dtype=np.int64)))
    base = kv_len - 1
    # keys k in [0, kv_len) of query p: offsets d = p - k at indices p .. p + base
    by_offsets = int((off_prefix[q_pos + base + 1] - off_prefix[q_pos]).sum())
    key_prefix = np.concatenate(([0], np.cumsum(keys, dtype=np.int64)))
    seen = np.minimum(q_pos + 1, kv_len) if causal else np.full(q_len, kv_len)
    by_keys = int(key_prefix[seen].sum())
    # A member k counted by an offset too: queries p in [q_first, q_last] with p - k in offsets.
    k = np.flatnonzero(keys)
    q_first, q_last = kv_len - q_len, kv_len - 1
    twice = int((off_prefix[q_last - k + base + 1] - off_prefix[q_first - k + base]).sum())
    return by_offsets + by_keys - twice


def keys_offsets_mask(
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    block: int,
    keys: np.ndarray,
    offsets: np.ndarray,
    causal: bool,
    label: str,
    estimate: Estimate | None = None,
    grid: bool | None = None,
) -> AttentionMask:
    """Per head, the keys in a key set plus the (query, key) pairs whose ``q_pos − k`` lies in an
    offset set, intersected with the causal flag.

    ``keys`` is ``bool[heads, kv_len]`` (MInference's verticals, Sparse-vDiT's stripes) and
    ``offsets`` ``bool[heads, 2·kv_len − 1]`` over ``d = q_pos − k`` from ``−(kv_len − 1)``
    (slashes, diagonal bands). Blocks are classified from runs of offsets and per-block key
    counts, never element by element, so a million-token mask costs its block grid and a few
    arrays of ``kv_len``. ``grid``: keep the block grid (default: when it fits
    :data:`GRID_LIMIT`); without it block states come from the descriptors (``rows``).
    """
    base_idx = kv_len - 1
    lo, hi = _causal_bounds(causal)
    offsets = offsets.copy()
    if causal:
        offsets[:, :base_idx] = False  # d < 0: keys after the query
    rows = KeyOffsetStates.of(keys, offsets, q_len, kv_len, block, lo, hi)
    if grid is None:
        grid = batch * rows.counts.size * rows.key_count.shape[1] <= GRID_LIMIT
    state = _keys_offsets_grid(keys, offsets, batch, q_len, kv_len, block, lo, hi) if grid else None
    kept = sum(_keys_offsets_count(keys[h], offsets[h], q_len, kv_len, causal)
               for h in range(heads))
    band = _band_elements(kv_len, q_len, lo, hi)

    def elements(b: int, h: int, q_idx: np.ndarray, kv_idx: np.ndarray) -> np.ndarray:
        d = (q_idx[:, None] + kv_len - q_len) - kv_idx[None, :]
        keep = keys[h][kv_idx][None, :] | offsets[h][d + base_idx]
        return keep & band(q_idx, kv_idx)

    return AttentionMask(batch, heads, q_len, kv_len, block, state, elements, batch * kept,
                         label, estimate=estimate, rows=rows)


def _keys_offsets_grid(keys: np.ndarray, offsets: np.ndarray, batch: int, q_len: int,
                       kv_len: int, block: int, lo: float, hi: float) -> np.ndarray:
    """The block grid of :func:`keys_offsets_mask`, from runs of offsets and key counts."""
    causal_state = _band_state(q_len, kv_len, block, lo, hi)
    state = np.empty((batch, keys.shape[0], *causal_state.shape), dtype=np.uint8)
    for h in range(keys.shape[0]):
        st = np.maximum(_offset_state(offsets[h], q_len, kv_len, block),
                        _key_state(keys[h], causal_state, kv_len, block))
        st[causal_state == EMPTY] = EMPTY
        st[(st == FULL) & (causal_state == PARTIAL)] = PARTIAL
        state[:, h] = st
    return state


def _offset_bands(kv_len: int, centres, half: int) -> np.ndarray:
    """``bool[2·kv_len − 1]`` offsets within ``half`` of any of ``centres``."""
    out = np.zeros(2 * kv_len - 1, dtype=bool)
    base = kv_len - 1
    for c in centres:
        a, b = max(c - half, -base), min(c + half, base)
        if a <= b:
            out[a + base : b + base + 1] = True
    return out


def video_masks(op: AttentionOp) -> AttentionMask:
    """Sparse-vDiT's diagonal, multi-diagonal and vertical-stripe patterns (one per op)."""
    p, kv_len = op.pattern, op.kv_len
    half = p.window - 1
    keys = np.zeros(kv_len, dtype=bool)
    if isinstance(p, DiagonalAttention):
        centres, label = [0], f"diagonal {p.window}"
    elif isinstance(p, MultiDiagonalAttention):
        reach = (kv_len - 1) // p.frame_tokens
        reach = min(reach, p.frames) if p.frames is not None else reach
        centres = [f * p.frame_tokens for f in range(-reach, reach + 1)]
        label = f"multi-diagonal {p.window}/{p.frame_tokens}"
    else:
        centres = [0]
        for f in p.stripe_frames:
            keys[f * p.frame_tokens : (f + 1) * p.frame_tokens] = True
        label = f"vertical-stripe frames {','.join(map(str, p.stripe_frames))}"
    offsets = _offset_bands(kv_len, centres, half)
    heads = op.heads
    return keys_offsets_mask(op.batch, heads, op.queries, kv_len, op.block_size,
                             np.broadcast_to(keys, (heads, kv_len)),
                             np.broadcast_to(offsets, (heads, offsets.size)), op.causal, label)


# --------------------------------------------------------------------------------------------
# Vertical-slash (MInference) and gated blocks (SeerAttention)
# --------------------------------------------------------------------------------------------


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    top = s.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(s - top)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def vertical_slash_indices(
    q_last: np.ndarray, k: np.ndarray, kv_len: int, vertical: int, slash: int
) -> tuple[np.ndarray, np.ndarray]:
    """MInference's last-query estimation for one head: ``q_last`` [n, d] are the last ``n``
    queries (positions ``kv_len − n ..``), ``k`` [kv_len, d] the keys. Softmax of their causal
    scores; verticals are the keys with the largest column sums, slashes the offsets
    ``q_pos − k`` with the largest diagonal sums. Key 0 (the sink) and offset 0 (the query
    itself) are always kept. Returns sorted index arrays (keys, offsets).

    In float32 and in place, as the accelerator's estimate would be: at a million keys the
    ``n × kv_len`` scores take 256 MiB once, not several float64 copies.
    """
    return vertical_slash_picks(np.asarray(q_last)[None], k, kv_len, vertical, slash)[0]


def vertical_slash_picks(q_heads: np.ndarray, k: np.ndarray, kv_len: int, vertical: int,
                         slash: int, scores: np.ndarray | None = None) -> list[tuple]:
    """:func:`vertical_slash_indices` of several heads that share the keys ``k``
    (``q_heads`` [heads, n, d]): their scores in one GEMM (the keys packed once: a quarter
    faster for two heads than two GEMMs; every score the same float32 value), then each
    head's softmax and sums on its own rows. ``scores``: a float32 buffer of at least
    ``heads · n × kv_len`` to compute them in (reused across calls: its pages are not faulted
    in afresh)."""
    heads, n, d = q_heads.shape
    if scores is None:
        scores = np.empty((heads * n, kv_len), dtype=np.float32)
    all_p = np.matmul(np.asarray(q_heads, dtype=np.float32).reshape(heads * n, d),
                      np.asarray(k, dtype=np.float32).T, out=scores[: heads * n])
    return [_picks_from_scores(all_p[i * n : (i + 1) * n], d, kv_len, vertical, slash)
            for i in range(heads)]


def _picks_from_scores(p: np.ndarray, d: int, kv_len: int, vertical: int,
                       slash: int) -> tuple[np.ndarray, np.ndarray]:
    """One head's verticals and slashes from its raw scores ``p`` [n, kv_len] (overwritten)."""
    q_pos = np.arange(p.shape[0]) + (kv_len - p.shape[0])
    p *= np.float32(1.0 / np.sqrt(d))
    for i, pos in enumerate(q_pos):  # causal: the last queries do not see later keys
        p[i, pos + 1 :] = -np.inf
    p -= p.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    column = p.sum(axis=0, dtype=np.float64)
    diag = np.zeros(kv_len)
    for i, pos in enumerate(q_pos):
        diag[: pos + 1] += p[i, pos::-1]
    column[0], diag[0] = np.inf, np.inf
    return _top(column, vertical), _top(diag, slash)


#: Query heads whose estimate scores share one GEMM: two (512 MiB of scores at a million
#: keys; all seven heads of a Qwen2.5 group would need 1.75 GiB beside K's 2 GiB).
_HEADS_PER_GEMM = 2


def _estimate_picks(q: np.ndarray, k: np.ndarray, kv_len: int, vertical: int,
                    slash: int) -> list[tuple]:
    """Per head of ``q`` [heads, n, d], its (keys, offsets) against its K/V head in ``k``
    [kv_heads, kv_len, d], :data:`_HEADS_PER_GEMM` heads of one group at a time."""
    heads, n, _ = q.shape
    group = heads // k.shape[0]
    scores = np.empty((min(group, _HEADS_PER_GEMM) * n, kv_len), dtype=np.float32)
    picks = []
    for g in range(k.shape[0]):
        for h0 in range(g * group, (g + 1) * group, _HEADS_PER_GEMM):
            h1 = min(h0 + _HEADS_PER_GEMM, (g + 1) * group)
            picks += vertical_slash_picks(q[h0:h1], k[g], kv_len, vertical, slash, scores)
    return picks


def _top(x: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of the ``n`` largest values, ties to the lower index (a stable sort's
    choice), by a partition rather than a sort of all ``x``."""
    if n >= x.size:
        return np.arange(x.size)
    cut = np.partition(x, x.size - n)[x.size - n]  # the n-th largest value
    above = np.flatnonzero(x > cut)
    return np.sort(np.concatenate([above, np.flatnonzero(x == cut)[: n - above.size]]))


def _indices_file(path: str, heads: int, kv_len: int) -> tuple[list, list]:
    arrays = _open_archive(path, ("vertical", "slash"), {"vertical", "slash"})
    out = []
    for name, top in (("vertical", kv_len - 1), ("slash", kv_len - 1)):
        a = arrays[name]
        if a.ndim != 2 or a.shape[0] not in (1, heads):
            raise SpecError(f"{path}: {name} has shape {a.shape}; expected [heads ({heads}) or 1, "
                            f"n] integer indices")
        if a.size and (a.min() < 0 or a.max() > top):
            raise SpecError(f"{path}: {name} indices must lie in 0..{top} for kv_len={kv_len}")
        out.append([a[min(h, a.shape[0] - 1)] for h in range(heads)])
    return out[0], out[1]


def vertical_slash_mask(op: AttentionOp) -> AttentionMask:
    """MInference's vertical-slash pattern of ``op`` (indices from its file or estimated)."""
    p, kv_len, heads = op.pattern, op.kv_len, op.heads
    if p.indices is not None:
        verticals, slashes = _indices_file(p.indices, heads, kv_len)
    else:
        last = min(p.last_q, op.queries)
        if p.data.source == "npy":
            q, k = load_qk(p.data, op)
            q = q[:, :, -last:]
        else:
            q, k = synthetic_qk(op.batch, heads, op.groups, last, kv_len, op.head_dim,
                                p.data.seed, structured=p.data.source == "synthetic")
        picks = _estimate_picks(q[0], k[0], kv_len, p.vertical, p.slash)
        verticals, slashes = [v for v, _ in picks], [o for _, o in picks]
    keys = np.zeros((heads, kv_len), dtype=bool)
    offsets = np.zeros((heads, 2 * kv_len - 1), dtype=bool)
    for h in range(heads):
        keys[h, verticals[h]] = True
        offsets[h, np.asarray(slashes[h]) + kv_len - 1] = True
    estimate = Estimate("last_queries", f"last {p.last_q} queries", queries=p.last_q)
    return keys_offsets_mask(op.batch, heads, op.queries, kv_len, op.block_size, keys, offsets,
                             op.causal, f"vertical-slash {p.vertical}/{p.slash}", estimate)


def _pool(x: np.ndarray, block: int) -> np.ndarray:
    """Average over consecutive ``block`` rows of the second-to-last axis (ragged last)."""
    n = x.shape[-2]
    starts = np.arange(0, n, block)
    sums = np.add.reduceat(x.astype(np.float64), starts, axis=-2)
    return sums / np.diff(np.append(starts, n))[:, None]


def gated_block_mask(q: np.ndarray, k: np.ndarray, block: int, top_k: int | None,
                     threshold: float | None, causal: bool) -> AttentionMask:
    """SeerAttention-style gate: pooled Q and K give block scores; softmax over the key blocks
    a query block may see; the ``top_k`` best (or those ≥ ``threshold``) are kept, and always
    the block holding the query block's last position. This gate is untrained (no learned
    projections): it is the pooled attention itself."""
    batch, heads, q_len, d = q.shape
    kv_len, group = k.shape[2], heads // k.shape[1]
    lo, hi = _causal_bounds(causal)
    base = _band_state(q_len, kv_len, block, lo, hi)
    nqb, nkb = base.shape
    q_last = np.minimum((np.arange(nqb) + 1) * block, q_len) - 1 + (kv_len - q_len)
    diagonal = np.minimum(q_last // block, nkb - 1)
    pq, pk = _pool(q, block), _pool(k, block)
    state = np.zeros((batch, heads, nqb, nkb), dtype=np.uint8)
    for b in range(batch):
        for h in range(heads):
            s = pq[b, h] @ pk[b, h // group].T / np.sqrt(d)
            prob = _softmax_rows(np.where(base != EMPTY, s, -np.inf))
            if top_k is not None:
                order = np.argsort(-prob, axis=1, kind="stable")[:, :top_k]
                keep = np.zeros_like(prob, dtype=bool)
                np.put_along_axis(keep, order, True, axis=1)
            else:
                keep = prob >= threshold
            keep[np.arange(nqb), diagonal] = True
            state[b, h] = np.where(keep, base, EMPTY)
    band = _band_elements(kv_len, q_len, lo, hi)
    kept = _kept_by_blocks(state, band, q_len, kv_len, block)
    rule = f"top-{top_k}" if top_k is not None else f">= {threshold:g}"
    return AttentionMask(batch, heads, q_len, kv_len, block, state,
                         lambda b, h, q_, kv: band(q_, kv), kept, f"gated blocks {rule}",
                         estimate=Estimate("pooled", "pooled Q·K gate"))


# --------------------------------------------------------------------------------------------
# Element masks from files
# --------------------------------------------------------------------------------------------


def _torch_mask(path: str, expected: str) -> np.ndarray:
    try:
        import torch
    except ImportError:
        raise SpecError(f"{path}: reading .pt files needs torch (pip install torch)") from None
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise SpecError(f"{path}: cannot read ({_one_line(exc)}); expected {expected}") from None
    if isinstance(value, dict) and "mask" in value:
        value = value["mask"]
    if not isinstance(value, torch.Tensor):
        raise SpecError(f"{path}: holds {type(value).__name__}; expected {expected}")
    if value.numel() > MAX_FILE_ELEMENTS:
        raise SpecError(f"{path}: {value.numel():,} elements, above the {MAX_FILE_ELEMENTS:,} a "
                        f"file array may hold; expected {expected}")
    if value.dtype.is_floating_point or value.dtype.is_complex:
        raise SpecError(f"{path}: dtype {value.dtype} is not boolean or integer; expected "
                        f"{expected}")
    return value.numpy()


def load_element_mask(path: str, batch: int, heads: int, q_len: int, kv_len: int) -> np.ndarray:
    """An element mask file as ``bool[batch, heads, q_len, kv_len]`` (1s broadcast)."""
    expected = f"a 0/1 mask [batch or 1, heads or 1, {q_len}, {kv_len}]"
    if path.endswith(".pt"):
        array = _torch_mask(path, expected)
    elif path.endswith(".npz"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                if "mask.npy" not in archive.namelist():
                    raise SpecError(f"{path}: no array 'mask'; expected {expected}")
                with archive.open("mask.npy") as fh:
                    array = _read_array(fh, f"{path}: mask", expected, "biu")
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError,
                RuntimeError, zlib.error) as exc:
            raise SpecError(f"{path}: cannot read ({_one_line(exc)}); expected {expected}") \
                from None
    else:
        array = _open_array(path, expected, "biu")
    if array.ndim != 4 or array.shape[2:] != (q_len, kv_len) or array.shape[0] not in (1, batch) \
            or array.shape[1] not in (1, heads):
        raise SpecError(f"{path}: shape {tuple(array.shape)}; expected {expected}")
    if array.dtype != bool and np.any((array != 0) & (array != 1)):
        raise SpecError(f"{path}: values other than 0 and 1; expected {expected}")
    return np.broadcast_to(array.astype(bool), (batch, heads, q_len, kv_len))


def element_mask(dense: np.ndarray, block: int, causal: bool, label: str) -> AttentionMask:
    """An element mask ``bool[batch, heads, q_len, kv_len]`` kept per block (causal applied)."""
    batch, heads, q_len, kv_len = dense.shape
    lo, hi = _causal_bounds(causal)
    band = _band_elements(kv_len, q_len, lo, hi)
    keep = dense & band(np.arange(q_len), np.arange(kv_len))[None, None]
    nqb, nkb = ceil_div(q_len, block), ceil_div(kv_len, block)
    padded = np.zeros((batch, heads, nqb * block, nkb * block), dtype=bool)
    padded[:, :, :q_len, :kv_len] = keep
    counts = padded.reshape(batch, heads, nqb, block, nkb, block).sum(axis=(3, 5))
    q_sizes = np.diff(np.minimum(np.arange(0, (nqb + 1) * block, block), q_len))
    k_sizes = np.diff(np.minimum(np.arange(0, (nkb + 1) * block, block), kv_len))
    areas = q_sizes[:, None] * k_sizes[None, :]
    state = np.where(counts == 0, EMPTY, np.where(counts == areas, FULL, PARTIAL))
    return AttentionMask(batch, heads, q_len, kv_len, block, state.astype(np.uint8),
                         lambda b, h, q, kv: keep[b, h][np.ix_(q, kv)], int(keep.sum()), label)


def build_mask(op: AttentionOp) -> AttentionMask:
    """The mask of an attention op's pattern (data-dependent patterns compute their tensors)."""
    p, q_len = op.pattern, op.queries
    shape = (op.batch, op.heads, q_len, op.kv_len, op.block_size)
    if isinstance(p, DenseAttention):
        return causal_mask(*shape, causal=op.causal)
    if isinstance(p, SlidingWindowAttention):
        windows = p.window if isinstance(p.window, tuple) else (p.window,)
        return sliding_window_mask(*shape, windows, p.global_tokens, op.causal)
    if isinstance(p, BlockSparseAttention):
        if p.file is not None:
            return load_npz(p.file, *shape, causal=op.causal)
        return block_sparse_mask(*shape, p.density, p.seed, op.causal)
    if isinstance(p, ScoreNMAttention):
        return score_nm_mask(*shape, p.n, p.m, op.causal)
    if isinstance(p, (DiagonalAttention, MultiDiagonalAttention, VerticalStripeAttention)):
        return video_masks(op)
    if isinstance(p, VerticalSlashAttention):
        return vertical_slash_mask(op)
    if isinstance(p, ElementMaskAttention):
        dense = load_element_mask(p.file, op.batch, op.heads, q_len, op.kv_len)
        return element_mask(dense, op.block_size, op.causal, "element mask file")
    q, k = qk_for(p.data, op)
    if isinstance(p, GatedBlockAttention):
        return gated_block_mask(q, k, op.block_size, p.top_k, p.threshold, op.causal)
    if isinstance(p, BlasstAttention):
        return blasst_mask(q, k, op.block_size, p.threshold, op.causal)
    if isinstance(p, TopKAttention):
        return topk_mask(q, k, op.block_size, p.tokens, p.channels, op.causal)
    raise SpecError(f"unknown attention pattern {p!r}")


def reference_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, base2: bool = False
) -> np.ndarray:
    """Masked softmax attention in float64: ``softmax(q·kᵀ, masked) · v`` per (batch, head).

    Shapes: q [B, H, Lq, d], k and v [B, Hkv, Lk, d], mask bool [B, H, Lq, Lk]. ``base2`` uses
    2^x instead of e^x (the accelerator's softmax; scale q by log2(e)/√d for the usual one).
    Queries with no key get zeros.
    """
    group = q.shape[1] // k.shape[1]
    kk = np.repeat(k.astype(np.float64), group, axis=1)
    vv = np.repeat(v.astype(np.float64), group, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), kk)
    s = np.where(mask, s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp2(s - top) if base2 else np.exp(s - top)
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.einsum("bhqk,bhkd->bhqd", p, vv)
