"""Tests of the BDWP torch reference: masks, hand-derived gradients, modules, training pipeline.

BDWP's backward is deliberately not the derivative of its forward (BP uses a second mask, WG is
straight-through), so every gradient is checked against an explicit reference written with
plain torch ops; ``gradcheck`` appears only where ``M_bp == M_ff`` makes the two coincide.
"""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from baselines.bdwp import (
    BDWPConv2d,
    BDWPConv2dFunction,
    BDWPLinear,
    BDWPLinearFunction,
    bdwp_masks,
    nm_mask,
)

DECAY = 2e-4


# --------------------------------------------------------------------------- references


def ref_nm_mask(w: torch.Tensor, n: int, m: int, dim: int) -> torch.Tensor:
    """Loop-by-loop N:M mask: sort each group by (-|w|, index) and keep the first n."""
    moved = w.movedim(dim, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    out = torch.zeros_like(flat)
    for r in range(flat.shape[0]):
        for g0 in range(0, flat.shape[1], m):
            mags = [abs(float(flat[r, g0 + j])) for j in range(m)]
            for j in sorted(range(m), key=lambda j: (-mags[j], j))[:n]:
                out[r, g0 + j] = 1
    return out.reshape(moved.shape).movedim(-1, dim)


def ref_masks(w: torch.Tensor, n: int, m: int, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """FF along axis 1 (in / C_in); BP along axis 0 (out / C_out), from W or from W ⊙ M_ff."""
    m_ff = ref_nm_mask(w, n, m, 1)
    if source == "dense":
        return m_ff, ref_nm_mask(w, n, m, 0)
    return m_ff, ref_nm_mask(w * m_ff, n, m, 0) * m_ff


def group_counts(mask: torch.Tensor, m: int, dim: int) -> torch.Tensor:
    moved = mask.movedim(dim, -1)
    return moved.reshape(*moved.shape[:-1], -1, m).sum(-1)


# --------------------------------------------------------------------------- masks


@st.composite
def mask_cases(draw):
    m = draw(st.integers(1, 8))
    n = draw(st.integers(1, m))
    ndim = draw(st.integers(1, 3))
    dim = draw(st.integers(-ndim, ndim - 1))
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    shape[dim] = m * draw(st.integers(1, 3))
    numel = 1
    for s in shape:
        numel *= s
    # Small integers (signed) force many magnitude ties; floats cover the generic case.
    values = draw(
        st.one_of(
            st.lists(st.integers(-2, 2), min_size=numel, max_size=numel),
            st.lists(
                st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=numel, max_size=numel
            ),
        )
    )
    return torch.tensor(values, dtype=torch.float32).reshape(shape), n, m, dim


@settings(max_examples=60, deadline=None)
@given(mask_cases())
def test_nm_mask_exactly_n_per_group_and_matches_reference(case):
    w, n, m, dim = case
    mask = nm_mask(w, n, m, dim)
    assert mask.shape == w.shape and mask.dtype == w.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(group_counts(mask, m, dim) == n)
    torch.testing.assert_close(mask, ref_nm_mask(w, n, m, dim), rtol=0, atol=0)
    # Every kept magnitude is >= every dropped magnitude of its group.
    mags = w.abs().movedim(dim, -1).reshape(-1, m)
    keep = mask.movedim(dim, -1).reshape(-1, m).bool()
    kept_min = torch.where(keep, mags, torch.inf).amin(-1)
    dropped_max = torch.where(keep, -torch.inf, mags).amax(-1)
    assert torch.all(kept_min >= dropped_max)


def test_nm_mask_ties_prefer_lower_index():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, -2.0, 2.0, 0.5], [0.0, 3.0, 0.0, 0.0]])
    assert nm_mask(w, 2, 4, 1).tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]]
    assert nm_mask(w, 1, 4, 1).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    # Same rule along axis 0: the column [1, 0.5, 0] vs ... groups of 3 rows, keep 1.
    assert nm_mask(w, 1, 3, 0)[:, 3].tolist() == [1, 0, 0]  # |1| > |0.5| > |0|
    assert nm_mask(torch.zeros(8), 3, 8, 0).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_nm_mask_large_tensor_is_deterministic_under_ties():
    w = torch.randint(-1, 2, (64, 256)).float()  # mostly ties
    assert torch.equal(nm_mask(w, 2, 8, 1), ref_nm_mask(w, 2, 8, 1))


@pytest.mark.parametrize(
    ("shape", "n", "m", "dim", "match"),
    [
        ((4, 6), 2, 4, 1, r"dimension 1 of a tensor with shape \(4, 6\) has size 6, "
                          r"which is not a multiple of m=4"),
        ((4, 8), 0, 4, 1, r"n must satisfy 0 < n <= m, got n=0, m=4"),
        ((4, 8), 5, 4, 1, r"n must satisfy 0 < n <= m, got n=5, m=4"),
        ((4, 8), 2, 4, 2, r"dim=2 is out of range for a tensor with shape \(4, 8\)"),
        ((), 1, 1, 0, r"at least one dimension"),
    ],
)
def test_nm_mask_errors(shape, n, m, dim, match):
    with pytest.raises(ValueError, match=match):
        nm_mask(torch.ones(shape), n, m, dim)


def test_nm_mask_rejects_non_int():
    with pytest.raises(TypeError, match=r"n must be an int, got 2\.0"):
        nm_mask(torch.ones(4), 2.0, 4, 0)
    with pytest.raises(TypeError, match=r"m must be an int, got True"):
        nm_mask(torch.ones(4), 1, True, 0)


def test_conv_masks_follow_sr_ste_layout():
    torch.manual_seed(0)
    w = torch.randn(8, 16, 3, 3)
    m_ff, m_bp = bdwp_masks(w, 2, 8)
    # SR-STE: permute to [C_out, kh, kw, C_in] and group the last axis.
    srste = ref_nm_mask(w.permute(0, 2, 3, 1), 2, 8, -1).permute(0, 3, 1, 2)
    assert torch.equal(m_ff, srste)
    assert torch.all(group_counts(m_ff, 8, 1) == 2)  # along C_in
    assert torch.all(group_counts(m_bp, 8, 0) == 2)  # along C_out
    assert torch.equal(m_bp, ref_nm_mask(w, 2, 8, 0))


def test_forward_masked_bp_mask_is_subset_of_ff_mask():
    torch.manual_seed(1)
    w = torch.randn(16, 32)
    m_ff, m_bp = bdwp_masks(w, 2, 4, bp_mask_source="forward_masked")
    ref_ff, ref_bp = ref_masks(w, 2, 4, "forward_masked")
    assert torch.equal(m_ff, ref_ff) and torch.equal(m_bp, ref_bp)
    assert torch.all(m_bp <= m_ff)  # BP never reads a weight FF pruned
    assert torch.all(group_counts(m_bp, 4, 0) <= 2)
    # It differs from the dense-source mask on random data (otherwise the option is moot).
    assert not torch.equal(m_bp, bdwp_masks(w, 2, 4, bp_mask_source="dense")[1])


def test_bdwp_masks_errors():
    with pytest.raises(ValueError, match=r"bp_mask_source must be one of .* got 'sparse'"):
        bdwp_masks(torch.ones(4, 4), 2, 4, bp_mask_source="sparse")
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 4\)"):
        bdwp_masks(torch.ones(4, 4, 4), 2, 4)
    with pytest.raises(ValueError, match=r"dimension 0 .* size 6, which is not a multiple of m=4"):
        bdwp_masks(torch.ones(6, 8), 2, 4)


# --------------------------------------------------------------------------- linear gradients


def _linear_case(seed: int, bias: bool):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    dy = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    return x, w, b, dy


@pytest.mark.parametrize("source", ["dense", "forward_masked"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_function_gradients_match_hand_reference(source, bias):
    x, w, b, dy = _linear_case(0, bias)
    m_ff, m_bp = ref_masks(w.detach(), 2, 4, source)
    assert not torch.equal(m_ff, m_bp)  # the case where BDWP differs from plain autograd
    y = BDWPLinearFunction.apply(x, w, b, *bdwp_masks(w, 2, 4, bp_mask_source=source), DECAY)
    y.backward(dy)

    xd, wd = x.detach(), w.detach()
    y_ref = xd @ (wd * m_ff).T + (b.detach() if bias else 0)
    dx_ref = dy @ (wd * m_bp)                                          # BP: second mask
    dw_ref = dy.reshape(-1, 8).T @ xd.reshape(-1, 16) + DECAY * (1 - m_ff) * wd  # WG: dense
    torch.testing.assert_close(y.detach(), y_ref)
    torch.testing.assert_close(x.grad, dx_ref)
    torch.testing.assert_close(w.grad, dw_ref)
    if bias:
        torch.testing.assert_close(b.grad, dy.sum((0, 1)))

    # The BP gradient really is not the derivative of the forward pass.
    x2 = xd.clone().requires_grad_()
    F.linear(x2, wd * m_ff).backward(dy)
    assert not torch.allclose(x2.grad, x.grad)


def test_linear_function_zero_decay_is_pure_straight_through():
    x, w, b, dy = _linear_case(2, True)
    m_ff, m_bp = bdwp_masks(w, 2, 4)
    BDWPLinearFunction.apply(x, w, b, m_ff, m_bp, 0.0).backward(dy)
    torch.testing.assert_close(w.grad, dy.reshape(-1, 8).T @ x.detach().reshape(-1, 16))


def test_linear_gradcheck_when_bp_mask_equals_ff_mask():
    # With M_bp == M_ff the input and bias gradients are the true derivatives. The weight
    # gradient is straight-through (dense) by design, so the weight is held constant here.
    x, w, b, _ = _linear_case(3, True)
    m_ff = nm_mask(w, 2, 4, 1)
    w_const = w.detach()
    assert torch.autograd.gradcheck(
        lambda x_, b_: BDWPLinearFunction.apply(x_, w_const, b_, m_ff, m_ff, DECAY), (x, b)
    )


# --------------------------------------------------------------------------- conv gradients


@pytest.mark.parametrize("source", ["dense", "forward_masked"])
@pytest.mark.parametrize(
    ("stride", "padding", "dilation"), [((1, 1), (1, 1), (1, 1)), ((2, 1), (0, 2), (1, 2))]
)
def test_conv_function_matches_unfold_linear_formulation(source, stride, padding, dilation):
    g = torch.Generator().manual_seed(4)
    kw = dict(kernel_size=(3, 2), dilation=dilation, padding=padding, stride=stride)
    x = torch.randn(2, 8, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 8, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    m_ff, m_bp = ref_masks(w.detach(), 2, 4, source)
    y = BDWPConv2dFunction.apply(
        x, w, b, *bdwp_masks(w, 2, 4, bp_mask_source=source), DECAY, stride, padding, dilation, 1
    )
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy)

    # im2col: conv(X, W) == W[out, in·kh·kw] @ unfold(X)[in·kh·kw, L].
    xd, wd = x.detach(), w.detach()
    x_unf = F.unfold(xd, **kw)                       # [B, K, L]
    dy_mat = dy.reshape(2, 8, -1)                    # [B, out, L]
    y_ref = (wd * m_ff).reshape(8, -1) @ x_unf + b.detach()[:, None]
    dx_unf = (wd * m_bp).reshape(8, -1).T @ dy_mat    # BP with the second mask
    dx_ref = F.fold(dx_unf, xd.shape[-2:], **kw)
    dw_ref = (dy_mat @ x_unf.transpose(1, 2)).sum(0).reshape(wd.shape) + DECAY * (1 - m_ff) * wd
    torch.testing.assert_close(y.detach(), y_ref.reshape(y.shape))
    torch.testing.assert_close(x.grad, dx_ref)
    torch.testing.assert_close(w.grad, dw_ref)
    torch.testing.assert_close(b.grad, dy.sum((0, 2, 3)))


def test_conv_function_grouped_matches_reference():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, 8, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    m_ff, m_bp = bdwp_masks(w, 2, 8)
    y = BDWPConv2dFunction.apply(x, w, None, m_ff, m_bp, DECAY, (1, 1), (1, 1), (1, 1), 2)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy)
    # References: dX is the derivative of a plain conv with W ⊙ M_bp, dW that of a plain conv
    # with the (unmasked) weight, plus the decay.
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    F.conv2d(xr, w.detach() * m_bp, None, 1, 1, 1, 2).backward(dy)
    F.conv2d(x.detach(), wr, None, 1, 1, 1, 2).backward(dy)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(w.grad, wr.grad + DECAY * (1 - m_ff) * w.detach())


def test_conv_gradcheck_when_bp_mask_equals_ff_mask():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    m_ff = nm_mask(w, 1, 4, 1)
    assert torch.autograd.gradcheck(
        lambda x_, b_: BDWPConv2dFunction.apply(
            x_, w, b_, m_ff, m_ff, DECAY, (1, 1), (1, 1), (1, 1), 1
        ),
        (x, b),
    )


# --------------------------------------------------------------------------- modules


def test_dense_mode_equals_torch_layers_exactly():
    for make_ref, make_bdwp, x in [
        (lambda: nn.Linear(16, 10), lambda: BDWPLinear(16, 10, n=2, m=8, mode="dense"),
         torch.randn(4, 16)),
        (lambda: nn.Conv2d(3, 5, 3, padding=1),
         lambda: BDWPConv2d(3, 5, 3, padding=1, n=2, m=8, mode="dense"),
         torch.randn(2, 3, 6, 6)),
    ]:
        torch.manual_seed(7)
        ref = make_ref()
        torch.manual_seed(7)
        mod = make_bdwp()
        xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, ym = ref(xr), mod(xm)
        assert torch.equal(yr, ym)
        yr.square().sum().backward()
        ym.square().sum().backward()
        assert torch.equal(xr.grad, xm.grad)
        assert torch.equal(ref.weight.grad, mod.weight.grad)
        assert torch.equal(ref.bias.grad, mod.bias.grad)


@pytest.mark.parametrize("source", ["dense", "forward_masked"])
def test_linear_module_gradients(source):
    torch.manual_seed(8)
    mod = BDWPLinear(16, 8, n=2, m=4, bp_mask_source=source)
    x = torch.randn(6, 16, requires_grad=True)
    dy = torch.randn(6, 8)
    mod(x).backward(dy)
    wd = mod.weight.detach()
    m_ff, m_bp = ref_masks(wd, 2, 4, source)
    torch.testing.assert_close(x.grad, dy @ (wd * m_bp))
    torch.testing.assert_close(mod.weight.grad, dy.T @ x.detach() + DECAY * (1 - m_ff) * wd)
    torch.testing.assert_close(mod.bias.grad, dy.sum(0))


def test_nm_ff_only_mode_reuses_ff_mask_in_backward():
    torch.manual_seed(9)
    mod = BDWPLinear(16, 8, n=1, m=4, mode="nm_ff_only")
    m_ff, m_bp = mod.masks()
    assert m_bp is m_ff
    x = torch.randn(5, 16, dtype=torch.float32, requires_grad=True)
    dy = torch.randn(5, 8)
    mod(x).backward(dy)
    torch.testing.assert_close(x.grad, dy @ (mod.weight.detach() * m_ff))
    # SR-STE only needs in % m == 0: out=10 is fine here but not for mode="bdwp".
    BDWPLinear(16, 10, n=1, m=4, mode="nm_ff_only")


@pytest.mark.parametrize("source", ["dense", "forward_masked"])
def test_conv_module_gradients_with_padding_mode(source):
    torch.manual_seed(10)
    mod = BDWPConv2d(8, 8, 3, padding=1, padding_mode="circular", n=2, m=4,
                     bp_mask_source=source, decay=1e-3)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    y = mod(x)
    dy = torch.randn(y.shape)
    y.backward(dy)
    wd = mod.weight.detach()
    m_ff, m_bp = ref_masks(wd, 2, 4, source)
    xr = x.detach().clone().requires_grad_()
    wr = wd.clone().requires_grad_()
    xp = F.pad(xr, (1, 1, 1, 1), mode="circular")
    torch.testing.assert_close(y.detach(), F.conv2d(xp.detach(), wd * m_ff, mod.bias.detach()))
    F.conv2d(xp, wd * m_bp).backward(dy)
    F.conv2d(F.pad(x.detach(), (1, 1, 1, 1), mode="circular"), wr).backward(dy)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(mod.weight.grad, wr.grad + 1e-3 * (1 - m_ff) * wd)


def test_conv_module_same_padding_and_unbatched_input():
    torch.manual_seed(11)
    mod = BDWPConv2d(8, 8, 2, padding="same", n=2, m=8)  # even kernel: asymmetric padding
    x = torch.randn(8, 5, 5)
    ref = F.conv2d(F.pad(x[None], (0, 1, 0, 1)), mod.weight.detach() * mod.masks()[0], mod.bias)
    torch.testing.assert_close(mod(x), ref[0])


def test_mask_cache_tracks_weight_version():
    torch.manual_seed(12)
    mod = BDWPLinear(16, 8, n=2, m=4)
    first = mod.masks()
    assert mod.masks()[0] is first[0]  # unchanged weight: cached, not recomputed
    mod(torch.randn(3, 16)).sum().backward()
    assert mod.masks()[0] is first[0]  # backward does not change the weight
    torch.optim.SGD(mod.parameters(), lr=0.1).step()
    second = mod.masks()
    assert second[0] is not first[0]  # optimizer.step() bumps the version
    with torch.no_grad():
        mod.weight.copy_(-mod.weight.flip(1))
    assert torch.equal(mod.masks()[0], nm_mask(mod.weight, 2, 4, 1))
    # Edits through .data bypass the version counter: reset_mask_cache() is the documented fix.
    mod.weight.data.copy_(torch.randn(8, 16))
    stale = mod.masks()[0]
    mod.reset_mask_cache()
    assert torch.equal(mod.masks()[0], nm_mask(mod.weight, 2, 4, 1))
    assert stale is not mod.masks()[0]
    mod.bp_mask_source = "forward_masked"  # an option change also invalidates the cache
    assert torch.equal(mod.masks()[1], bdwp_masks(mod.weight, 2, 4,
                                                  bp_mask_source="forward_masked")[1])


def test_module_pickles_and_deepcopies():
    torch.manual_seed(13)
    mod = BDWPConv2d(8, 8, 3, n=2, m=8)
    x = torch.randn(1, 8, 5, 5)
    y = mod(x)
    buf = io.BytesIO()
    torch.save(mod, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x), y)
    assert torch.equal(copy.deepcopy(mod)(x), y)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: BDWPLinear(10, 8, n=2, m=4),
         r"BDWPLinear: in_features=10 is not a multiple of m=4; the FF mask groups"),
        (lambda: BDWPLinear(8, 10, n=2, m=4),
         r"BDWPLinear: out_features=10 is not a multiple of m=4; the BP mask groups"),
        (lambda: BDWPConv2d(1, 8, 3, n=2, m=8),
         r"BDWPConv2d: in_channels/groups=1 is not a multiple of m=8"),
        (lambda: BDWPConv2d(16, 16, 3, groups=4, n=2, m=8),
         r"in_channels/groups=4 is not a multiple of m=8"),
        (lambda: BDWPLinear(8, 8, n=2, m=4, mode="sparse"), r"mode must be one of"),
        (lambda: BDWPLinear(8, 8, n=2, m=4, bp_mask_source="x"), r"bp_mask_source must be"),
        (lambda: BDWPLinear(8, 8, n=2, m=4, decay=-1.0), r"decay must be >= 0, got -1\.0"),
        (lambda: BDWPLinear(8, 8, n=3, m=2), r"n must satisfy 0 < n <= m, got n=3, m=2"),
        (lambda: BDWPLinear(8, 8, n=2, m=8, mode="dense").masks(), r"has no N:M masks"),
    ],
)
def test_module_errors(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_dense_mode_layer_accepts_any_shape():
    BDWPLinear(10, 7, n=2, m=8, mode="dense")
    BDWPConv2d(1, 3, 3, n=2, m=8, mode="dense")


# --------------------------------------------------------------------------- training pipeline


def test_train_digits_pipeline_runs(tmp_path, capsys):
    from baselines.bdwp.train_digits import main

    out = tmp_path / "result.json"
    assert main(["--seeds", "0", "1", "--epochs", "1", "--train-subset", "256",
                 "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["configs"]) == {"dense", "bdwp 2:8", "bdwp 2:4"}
    for r in result["configs"].values():
        assert len(r["accuracies"]) == 2
        assert all(0.0 <= a <= 1.0 for a in r["accuracies"])
    assert result["threads"] == 1 and result["epochs"] == 1
    assert result["dataset"]["n_train"] == 256 and result["dataset"]["n_test"] == 450
    assert "| bdwp 2:8 |" in capsys.readouterr().out


def test_digits_cnn_prunes_the_middle_layers():
    from baselines.bdwp.train_digits import CONFIGS, DigitsCNN

    config = next(c for c in CONFIGS if c.name == "bdwp 2:8")
    model = DigitsCNN(config)
    for layer in (model.conv2, model.fc1):
        assert (layer.mode, layer.n, layer.m) == ("bdwp", 2, 8)
        m_ff, m_bp = layer.masks()
        assert torch.all(group_counts(m_ff, 8, 1) == 2)
        assert torch.all(group_counts(m_bp, 8, 0) == 2)
    assert type(model.conv1) is nn.Conv2d and type(model.fc2) is nn.Linear


def test_train_digits_bad_arguments_exit_2(capsys):
    from baselines.bdwp.train_digits import main

    assert main(["--epochs", "0"]) == 2
    assert "epochs and threads must be >= 1" in capsys.readouterr().err
