"""The GPU baseline run's pieces on the CPU: lowered BDWP layers, the training step, the suite.

The 2:4 kernels themselves need CUDA (those tests skip without it); everything around them —
the im2col lowering that lets a convolution use them, the ResNet-18 they run in, the suite that
writes the result files and survives a failing part — is checked here.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from baselines.bdwp.functions import BDWPConv2dFunction, BDWPLinearFunction, bdwp_masks  # noqa: E402
from baselines.bdwp.lowered import ConvGeometry, LoweredBDWP  # noqa: E402
from baselines.gpu_suite import Part, device_slug, main, plan, run_suite  # noqa: E402
from baselines.train_step import build_model, measure_training_step  # noqa: E402

F64 = torch.float64
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _conv_reference(x, w, g: ConvGeometry, kernels: str, decay: float):
    s, p = (g.stride, g.stride), (g.padding, g.padding)
    if kernels == "dense":
        return torch.nn.functional.conv2d(x, w, None, s, p)
    mask_ff, mask_bp = bdwp_masks(w.detach(), 2, 4)
    return BDWPConv2dFunction.apply(x, w, None, mask_ff, mask_bp, decay, s, p, (1, 1), 1)


@pytest.mark.parametrize("kernels", ["dense", "masked"])
@pytest.mark.parametrize("c_in,c_out,k,stride,pad,h,w", [
    (8, 16, 3, 1, 1, 9, 7), (8, 8, 3, 2, 1, 10, 10), (16, 8, 1, 2, 0, 7, 7),
    (8, 16, 7, 2, 3, 15, 13), (4, 8, 3, 1, 0, 6, 6),
])
def test_lowered_conv_is_the_bdwp_convolution(kernels, c_in, c_out, k, stride, pad, h, w):
    torch.manual_seed(c_in * k + h)
    g = ConvGeometry(k, stride, pad)
    layer = LoweredBDWP((c_out, c_in, k, k), g, kernels=kernels, dtype=F64)
    x = torch.randn(2, c_in, h, w, dtype=F64, requires_grad=True)
    y = layer(x)
    grad = torch.randn_like(y)
    y.backward(grad)
    ref_w = layer.weight.detach().clone().requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    ref_y = _conv_reference(ref_x, ref_w, g, kernels, layer.decay)
    ref_y.backward(grad)
    assert y.shape == ref_y.shape
    torch.testing.assert_close(y, ref_y)
    torch.testing.assert_close(x.grad, ref_x.grad)
    torch.testing.assert_close(layer.weight.grad, ref_w.grad)


def test_lowered_linear_is_the_bdwp_linear():
    torch.manual_seed(1)
    layer = LoweredBDWP((8, 12), None, kernels="masked", dtype=F64)
    x = torch.randn(5, 12, dtype=F64, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    w = layer.weight.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    mask_ff, mask_bp = bdwp_masks(w.detach(), 2, 4)
    y2 = BDWPLinearFunction.apply(x2, w, None, mask_ff, mask_bp, layer.decay)
    y2.sum().backward()
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(layer.weight.grad, w.grad)


def test_2_4_kernels_without_a_backend_run_masked_and_say_why():
    torch.manual_seed(2)
    masked = LoweredBDWP((8, 8, 3, 3), ConvGeometry(3, 1, 1), kernels="masked", dtype=F64)
    sparse = LoweredBDWP((8, 8, 3, 3), ConvGeometry(3, 1, 1), kernels="semi_structured",
                         dtype=F64, backend=None)
    sparse.load_state_dict(masked.state_dict())
    x = torch.randn(2, 8, 5, 5, dtype=F64)
    torch.testing.assert_close(masked(x), sparse(x))
    sparse(x.requires_grad_()).sum().backward()
    assert set(sparse.dense_reasons) == {"ff", "bp"}
    assert "no 2:4" in sparse.dense_reasons["ff"]


def test_resnet18_lowered_equals_cudnn_dense():
    kw = {"n": 2, "m": 4, "backend": None, "device": "cpu", "dtype": F64, "seed": 0,
          "num_classes": 10}
    ref, low = build_model("cudnn_dense", **kw), build_model("im2col_dense", **kw)
    low.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    torch.testing.assert_close(low(x), ref(x))


def test_resnet18_prunes_every_layer_but_the_first_convolution():
    model = build_model("im2col_bdwp_masked", n=2, m=4, backend=None, device="cpu",
                        dtype=torch.float32, seed=0, num_classes=16)
    kernels = [m.kernels for m in model.modules() if isinstance(m, LoweredBDWP)]
    assert kernels[0] == "dense" and set(kernels[1:]) == {"masked"}
    assert len(kernels) == 21  # 1 stem + 16 block convs + 3 downsamples + the classifier


def test_training_step_on_cpu_leaves_2_4_out_and_records_provenance():
    doc = measure_training_step(device="cpu", dtype="fp32", batch=2, image=32, iters=2,
                                warmup=1)
    assert [r["variant"] for r in doc["variants"]] == [
        "cudnn_dense", "im2col_dense", "im2col_bdwp_masked"]
    assert "CUDA-only" in doc["notes"][0] and "check" not in doc
    assert doc["provenance"]["device"] == "cpu" and doc["provenance"]["timer"] == "perf_counter_ns"
    by = {r["variant"]: r["median_s"] for r in doc["variants"]}
    assert doc["speedups"]["im2col_bdwp_masked_vs_im2col_dense"] == pytest.approx(
        by["im2col_dense"] / by["im2col_bdwp_masked"])


@needs_cuda
def test_training_step_2_4_on_cuda_matches_masked_dense():
    doc = measure_training_step(device="cuda", batch=4, image=64, iters=2, warmup=1)
    check = doc["check"]  # as close to an fp32 step as the cuBLAS fp16 step is
    assert check["grad_error_2_4"] <= max(2 * check["grad_error_masked"], 0.02)


def test_plan_covers_the_shipped_workloads_not_the_sweeps():
    names = [p.name for p in plan()]
    assert names[:5] == ["tiny_gemm", "resnet18_dense", "resnet18_bdwp", "resnet18_bdwp_2of4",
                         "resnet18_training_step"]
    assert not any(n.startswith("sweep_") for n in names)
    assert {"spgemm_rmat", "attention_patterns", "bert_inference_nm"} <= set(names)
    flex = [p for p in plan() if p.flex_compile]
    assert flex and all(p.name.endswith("_flex") for p in flex)
    assert names[-len(flex):] == [p.name for p in flex]  # the compiles run last


def test_a_failing_part_is_recorded_and_the_next_still_runs(tmp_path):
    ok = Part("tiny_gemm", "baseline", plan(only=("tiny_gemm",))[0].source)
    broken = Part("broken", "baseline", tmp_path / "missing.yaml")
    outcomes = run_suite([broken, ok], tmp_path, device="cpu", budget_s=600, reps=1,
                         warmup=0, log=lambda s: None)
    assert [o.status for o in outcomes] == ["failed", "ok"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["parts"][0]["error"] and manifest["parts"][1]["file"] == "tiny_gemm.json"
    doc = json.loads((tmp_path / "tiny_gemm.json").read_text())
    assert doc["kind"] == "archsim-baseline" and doc["provenance"]["device"] == "cpu"


def test_the_budget_stops_starting_parts(tmp_path):
    parts = plan(only=("tiny_gemm", "spgemm_rmat"))
    outcomes = run_suite(parts, tmp_path, device="cpu", budget_s=-1, log=lambda s: None)
    assert all(o.status == "skipped" and "budget" in o.error for o in outcomes)
    assert not (tmp_path / "tiny_gemm.json").exists()


def test_unknown_part_exits_2(capsys):
    assert main(["--device", "cpu", "--only", "tiny_gem"]) == 2
    assert "no part named tiny_gem" in capsys.readouterr().err


def test_device_slug():
    assert device_slug("NVIDIA H200") == "nvidia-h200"
    assert device_slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"


@needs_cuda
@pytest.mark.parametrize("geometry", [ConvGeometry(3, 1, 1), ConvGeometry(1, 2, 0), None])
def test_2_4_layer_on_cuda_matches_masked_dense(geometry):
    from baselines.measure import semi_structured_backend

    torch.manual_seed(3)
    shape = (64, 64, geometry.kernel, geometry.kernel) if geometry else (64, 128)
    kw = {"device": "cuda", "dtype": torch.float16, "backend": semi_structured_backend(torch)}
    masked = LoweredBDWP(shape, geometry, kernels="masked", **kw)
    sparse = LoweredBDWP(shape, geometry, kernels="semi_structured", **kw)
    sparse.load_state_dict(masked.state_dict())
    x = torch.randn(32, 64, 16, 16) if geometry else torch.randn(256, 128)
    outs = []
    for layer in (masked, sparse):
        xi = x.to("cuda", torch.float16).requires_grad_()
        y = layer(xi)
        y.backward(torch.ones_like(y))
        outs.append((y.float(), xi.grad.float(), layer.weight.grad.float()))
    assert not sparse.dense_reasons
    for a, b in zip(*outs):
        assert float((a - b).norm() / a.norm()) < 1e-2


def test_grad_check_measures_both_fp16_steps_against_fp32():
    from baselines.train_step import _grad_check

    kw = {"n": 2, "m": 4, "backend": None, "device": "cpu", "dtype": F64, "seed": 0,
          "num_classes": 10}
    models = {"im2col_bdwp_masked": build_model("im2col_bdwp_masked", **kw),
              "im2col_bdwp_2:4": build_model("im2col_bdwp_2:4", **kw)}
    x, target = torch.randn(2, 3, 32, 32, dtype=F64), torch.tensor([1, 7])
    check = _grad_check(models, x, target)  # no 2:4 backend here: masked kernels in both
    assert check["loss_masked"] == check["loss_2_4"] == pytest.approx(check["loss_fp32"], rel=1e-4)
    assert check["grad_error_masked"] == check["grad_error_2_4"] < 0.05
    assert check["worst_layer_2_4"] and "bn" not in check["worst_layer_2_4"]


def test_committed_gpu_results_belong_to_the_shipped_examples():
    """Each measured file still matches its example (with the suite's overrides), so
    ``archsim run EXAMPLE --baseline FILE`` works; a changed example must be re-measured."""
    from pathlib import Path

    from baselines.compare import load_baseline_for
    from workloads.load import load_workload

    results = Path(__file__).resolve().parents[2] / "baselines" / "results"
    files = sorted(results.glob("*/*.json"))
    assert files, "no committed GPU results"
    parts = {p.name: p for p in plan()}
    for path in files:
        if path.stem in ("manifest", "resnet18_training_step"):
            continue
        part = parts[path.stem]
        workload = load_workload(part.source, overrides=list(part.overrides))
        doc = load_baseline_for(path, workload)
        assert doc.provenance.device == "cuda" and doc.provenance.gpu_clocks


@pytest.mark.parametrize("argv", [["--reps", "0"], ["--warmup", "-1"], ["--step-iters", "0"]])
def test_bad_counts_exit_2_before_measuring(argv, capsys):
    assert main(["--device", "cpu", "--only", "tiny_gemm", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be at least" in err[0]
