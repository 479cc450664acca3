"""The golden softmax against float64: its documented error bound holds, and is not vacuous."""

from __future__ import annotations

import numpy as np
import pytest

from dataflows.softmax_format import SoftmaxFormat
from verification.golden_softmax import (
    error_bound,
    exp2_neg,
    exp_table,
    quantization_bound,
    quantize_scores,
    softmax_fixed,
    softmax_float,
)
from workloads.load import load_hardware

TINY, SAT = load_hardware("tiny"), load_hardware("sat_vcu1525")


def fmt_of(hw, **vector_unit):
    vu = hw.vector_unit.model_copy(update=vector_unit)
    return SoftmaxFormat.of(hw.model_copy(update={"vector_unit": vu}))


FORMATS = {
    "tiny": SoftmaxFormat.of(TINY),  # P = 7, E = 16, F = 8
    "sat": SoftmaxFormat.of(SAT),  # P = 15, E = 16, F = 8, 32 lanes
    "coarse": fmt_of(TINY, score_bits=10, score_frac_bits=3, exp_bits=10),
}


def tiles(fmt: SoftmaxFormat, seed: int, count: int = 60):
    rng = np.random.default_rng(seed)
    lo, hi = fmt.score_range
    for _ in range(count):
        rows = int(rng.integers(1, 200))
        spread = int(rng.choice([1, 3, 10, 40])) << fmt.frac_bits
        x = np.clip(rng.integers(-spread, spread + 1, size=(rows, fmt.lanes)), lo, hi)
        keep = rng.random((rows, fmt.lanes)) < rng.choice([1.0, 0.7, 0.2])
        yield x.astype(np.int64), keep


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_error_bound_holds_and_is_tight_enough_to_mean_something(name):
    fmt = FORMATS[name]
    worst_ratio = 0.0
    for x, keep in tiles(fmt, seed=len(name)):
        fixed = softmax_fixed(x, keep, fmt) / 2.0**fmt.prob_bits
        exact = softmax_float(x, keep, fmt)
        err = np.abs(fixed - exact)
        bound = error_bound(exact, keep, fmt)
        assert np.all(err <= bound), (
            f"error {err.max():.3g} exceeds bound {bound[err > bound][0]:.3g}"
        )
        worst_ratio = max(worst_ratio, float((err / bound).max()))
    # The bound is within two orders of magnitude of what happens, not a formality.
    assert worst_ratio > 0.01, worst_ratio


def test_bound_numbers_for_the_sat_preset():
    # 128 keys, 15-bit probabilities, 16-bit exponentials: a uniform row (p = 1/128) is within
    # 2^-15 + 1.25 * 2 * 2^-16, about 7e-5, of float; the docs quote this figure.
    fmt = FORMATS["sat"]
    p = np.full((128, 1), 1 / 128)
    bound = error_bound(p, np.ones((128, 1), bool), fmt)
    assert bound[0, 0] == pytest.approx(2.0**-15 + 1.25 * (1 + 127 / 128) * 2.0**-16)
    x = np.zeros((128, fmt.lanes), dtype=np.int64)
    fixed = softmax_fixed(x, None, fmt) / 2.0**fmt.prob_bits
    assert np.all(np.abs(fixed - 1 / 128) <= bound[0, 0])


def test_real_scores_add_at_most_the_quantization_bound():
    fmt = FORMATS["sat"]
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 4, size=(96, fmt.lanes))
    x = quantize_scores(scores, fmt)
    exact_real = np.exp2(scores - scores.max(axis=0))
    exact_real /= exact_real.sum(axis=0)
    fixed = softmax_fixed(x, None, fmt) / 2.0**fmt.prob_bits
    exact_q = softmax_float(x, None, fmt)
    limit = error_bound(exact_q, None, fmt) + quantization_bound(
        np.maximum(exact_q, exact_real), fmt
    )
    assert np.all(np.abs(fixed - exact_real) <= limit)


def test_edges_masked_lane_single_score_and_saturation():
    fmt = FORMATS["tiny"]
    x = np.array([[5, 7], [9, 7]], dtype=np.int64)
    keep = np.array([[False, True], [False, False]])
    p = softmax_fixed(x, keep, fmt)
    assert p[:, 0].tolist() == [0, 0]  # nothing kept: zeros, not a division by zero
    assert p[0, 1] == (1 << fmt.prob_bits) - 1  # probability 1 saturates to 2^P - 1
    assert p[1, 1] == 0


def test_table_and_exponentials():
    fmt = FORMATS["tiny"]
    table = exp_table(fmt)
    assert table[0] == 1 << fmt.exp_bits and len(table) == 1 << fmt.frac_bits
    assert np.all(np.diff(table) < 0)  # strictly decreasing
    # d = one whole unit: exactly half; far below: underflows to 0.
    assert exp2_neg(np.array([1 << fmt.frac_bits]), fmt)[0] == 1 << (fmt.exp_bits - 1)
    assert exp2_neg(np.array([(fmt.exp_bits + 2) << fmt.frac_bits]), fmt)[0] == 0


def test_out_of_range_scores_are_rejected():
    fmt = FORMATS["coarse"]
    with pytest.raises(ValueError, match="fit 10 bits"):
        softmax_fixed(np.array([[1 << 10]]), None, fmt)
