"""A measured ResNet-18 BDWP training step: dense against 2:4 semi-structured kernels.

``archsim baseline`` times each GEMM alone; this times whole training iterations (forward, loss,
backward, SGD update) of ResNet-18, so that what 2:4 buys per GEMM can be read against what it
buys a step, where normalization, activations, im2col/col2im, mask computation and the 2:4
compression of the weights (every step, since the weights change) all take their share.

Variants (:data:`VARIANTS`):

- ``cudnn_dense``: ``nn.Conv2d``/``nn.Linear`` — what a GPU user gets by default;
- ``im2col_dense``: every convolution lowered to GEMMs (:mod:`baselines.bdwp.lowered`), dense;
- ``im2col_bdwp_masked``: lowered, BDWP masks applied, dense kernels;
- ``im2col_bdwp_2:4``: lowered, FF and BP GEMMs on 2:4 semi-structured kernels (CUDA only).

The 2:4 variant's honest reference is ``im2col_dense`` (the same lowering); ``cudnn_dense`` says
what the lowering itself costs. A layer is pruned when both of its N:M axes (``C_in`` for FF,
``C_out`` for BP) are multiples of M: ResNet-18's first convolution (3 input channels) stays
dense in every variant, as in the accelerator's workload.

Run as part of ``python -m baselines.gpu_suite`` or directly:
``python -m baselines.train_step --device cuda --out step.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["VARIANTS", "resnet18", "measure_training_step", "main"]

VARIANTS = ("cudnn_dense", "im2col_dense", "im2col_bdwp_masked", "im2col_bdwp_2:4")
_KERNELS = {"im2col_dense": "dense", "im2col_bdwp_masked": "masked",
            "im2col_bdwp_2:4": "semi_structured"}


def resnet18(conv: Callable[..., Any], linear: Callable[..., Any], num_classes: int = 1000):
    """ResNet-18 (He et al. 2016; torchvision's layout) built from the given layer factories.

    ``conv(c_in, c_out, kernel, stride, padding)`` and ``linear(in, out)`` make the GEMM layers,
    so the same network runs on cuDNN convolutions or on lowered BDWP layers.
    """
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = conv(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out)
            self.conv2, self.bn2 = conv(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out)
            self.down = None
            if stride != 1 or c_in != c_out:
                self.down = nn.Sequential(conv(c_in, c_out, 1, stride, 0), nn.BatchNorm2d(c_out))

        def forward(self, x):
            y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (y + (x if self.down is None else self.down(x))).relu()

    stages, c_in = [], 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages += [Block(c_in, c_out, stride), Block(c_out, c_out, 1)]
        c_in = c_out
    return nn.Sequential(
        conv(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear(512, num_classes),
    )


def _factories(variant: str, n: int, m: int, backend: str | None):
    from torch import nn

    from baselines.bdwp.lowered import ConvGeometry, LoweredBDWP

    if variant == "cudnn_dense":
        return (lambda ci, co, k, s, p: nn.Conv2d(ci, co, k, s, p, bias=False),
                lambda i, o: nn.Linear(i, o, bias=False))

    def kernels(c_in: int, c_out: int) -> str:
        prunable = c_in % m == 0 and c_out % m == 0
        return _KERNELS[variant] if prunable else "dense"

    def conv(ci, co, k, s, p):
        return LoweredBDWP((co, ci, k, k), ConvGeometry(k, s, p), kernels=kernels(ci, co),
                           n=n, m=m, backend=backend)

    def linear(i, o):
        return LoweredBDWP((o, i), None, kernels=kernels(i, o), n=n, m=m, backend=backend)

    return conv, linear


def build_model(variant: str, *, n: int, m: int, backend: str | None, device: str, dtype,
                seed: int, num_classes: int = 1000):
    """The variant's ResNet-18 on ``device``, weights drawn from ``seed`` (the same for every
    variant: a lowered weight has the convolution's shape)."""
    import torch

    torch.manual_seed(seed)
    model = resnet18(*_factories(variant, n, m, backend), num_classes=num_classes)
    return model.to(device=device, dtype=dtype)


#: Static loss scale. In fp16 the gradients deep in the network fall below fp16's normal range
#: (about 6e-5) without it, where kernels that flush subnormals to zero and kernels that keep
#: them disagree completely; mixed-precision training scales the loss for the same reason. The
#: optimizer's learning rate is divided by it, which for SGD undoes the scale exactly.
LOSS_SCALE = 1024.0


def _loss(model, x, target):
    import torch.nn.functional as F

    return F.cross_entropy(model(x), target) * LOSS_SCALE


def _step(model, x, target, opt) -> None:
    opt.zero_grad(set_to_none=True)
    _loss(model, x, target).backward()
    opt.step()


def _time_steps(model, x, target, *, iters: int, warmup: int, device: str) -> list[float]:
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=1e-3 / LOSS_SCALE, momentum=0.9)
    for _ in range(warmup):
        _step(model, x, target, opt)
    if device != "cuda":
        times = []
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            _step(model, x, target, opt)
            times.append((time.perf_counter_ns() - t0) * 1e-9)
        return times
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iters)]
    for start, end in events:
        start.record()
        _step(model, x, target, opt)
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) * 1e-3 for start, end in events]


def _dense_gemms(model) -> list[dict[str, str]]:
    """The pruned layers' GEMMs that ran masked-dense in a 2:4 variant, and torch's reason."""
    out = []
    for name, layer in model.named_modules():
        for gemm, reason in sorted(getattr(layer, "dense_reasons", {}).items()):
            out.append({"layer": name, "gemm": gemm, "reason": reason})
    return out


def _gemm_grads(model, x, target) -> tuple[float, dict]:
    """The loss and each GEMM layer's weight gradient (float32) after one backward pass."""
    from baselines.bdwp.lowered import LoweredBDWP

    model.zero_grad(set_to_none=True)
    loss = _loss(model, x, target)
    loss.backward()
    grads = {name: m.weight.grad.float() for name, m in model.named_modules()
             if isinstance(m, LoweredBDWP)}
    return float(loss.detach()) / LOSS_SCALE, grads


def _relative(test: dict, ref: dict) -> tuple[float, float, str]:
    """(relative difference of all gradients together, of the worst layer, that layer)."""
    import torch

    num = sum(float((test[k] - ref[k]).norm()) ** 2 for k in ref) ** 0.5
    den = sum(float(ref[k].norm()) ** 2 for k in ref) ** 0.5 or 1.0
    worst = max((float((test[k] - ref[k]).norm() / (ref[k].norm() + torch.finfo().tiny)), k)
                for k in ref)
    return num / den, worst[0], worst[1]


def _grad_check(models: dict, x, target) -> dict:
    """The 2:4 variant's gradients against an fp32 step of the masked-dense variant on the same
    weights and batch, beside the masked-dense fp16 step's: 2:4 kernels must be as close to
    fp32 as cuBLAS is. (fp16 rounding alone, compounded through 20 layers of batch-norm
    backward, moves the first layers' gradients by percents, so the two fp16 steps are not
    compared with each other.)"""
    import copy

    ref, test = models["im2col_bdwp_masked"], models["im2col_bdwp_2:4"]
    test.load_state_dict(ref.state_dict())
    fp32 = copy.deepcopy(ref).float()
    loss32, g32 = _gemm_grads(fp32, x.float(), target)
    out = {"loss_fp32": loss32}
    for label, model in (("masked", ref), ("2_4", test)):
        loss, grads = _gemm_grads(model, x, target)
        total, worst, layer = _relative(grads, g32)
        out.update({f"loss_{label}": loss, f"grad_error_{label}": total,
                    f"worst_layer_error_{label}": worst, f"worst_layer_{label}": layer})
    return out


def measure_training_step(*, device: str = "cuda", dtype: str = "fp16", batch: int = 32,
                          image: int = 224, n: int = 2, m: int = 4, iters: int = 10,
                          warmup: int = 3, seed: int = 0,
                          variants: tuple[str, ...] = VARIANTS) -> dict:
    """Time one training step of ResNet-18 per variant; the document written as JSON.

    The 2:4 variant runs only on CUDA (it is left out elsewhere, with a note); with both BDWP
    variants present, ``check`` compares their gradients on one batch.
    """
    import torch

    from baselines.measure import TORCH_DTYPES, run_provenance, semi_structured_backend
    from baselines.timing import summarize

    tdtype = getattr(torch, TORCH_DTYPES[dtype])
    backend = semi_structured_backend(torch) if device == "cuda" else None
    notes = []
    if device != "cuda" and "im2col_bdwp_2:4" in variants:
        variants = tuple(v for v in variants if v != "im2col_bdwp_2:4")
        notes.append("im2col_bdwp_2:4 left out: 2:4 semi-structured kernels are CUDA-only")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, image, image, generator=gen).to(device=device, dtype=tdtype)
    target = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    models, rows = {}, []
    for variant in variants:
        model = build_model(variant, n=n, m=m, backend=backend, device=device, dtype=tdtype,
                            seed=seed)
        times = _time_steps(model, x, target, iters=iters, warmup=warmup, device=device)
        s = summarize(times)
        rows.append({"variant": variant, "median_s": s.median_s, "p20_s": s.p20_s,
                     "p80_s": s.p80_s, "samples": s.samples,
                     "dense_gemms": _dense_gemms(model)})
        models[variant] = model
    doc = {
        "kind": "archsim-training-step", "schema_version": 1, "model": "resnet18",
        "batch": batch, "image": image, "nm": f"{n}:{m}", "iters": iters, "warmup": warmup,
        "provenance": run_provenance(torch, device=device, dtype=dtype, reps=iters,
                                     warmup=warmup, seed=seed).model_dump(),
        "variants": rows, "speedups": _speedups(rows), "notes": notes,
    }
    if {"im2col_bdwp_masked", "im2col_bdwp_2:4"} <= set(models):
        doc["check"] = _grad_check(models, x, target)
    return doc


def _speedups(rows: list[dict]) -> dict[str, float]:
    """Each variant's step time over the dense ones: ``<variant>_vs_<dense>``."""
    by = {r["variant"]: r["median_s"] for r in rows}
    out = {}
    for dense in ("cudnn_dense", "im2col_dense"):
        for v, t in by.items():
            if dense in by and v != dense:
                out[f"{v}_vs_{dense}"] = by[dense] / t
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
    doc = measure_training_step(device=args.device, dtype=dtype, batch=args.batch,
                                image=args.image, iters=args.iters, warmup=args.warmup)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    for row in doc["variants"]:
        print(f"{row['variant']:>20}: {row['median_s'] * 1e3:9.2f} ms "
              f"(p20 {row['p20_s'] * 1e3:.2f}, p80 {row['p80_s'] * 1e3:.2f})")
    print(json.dumps(doc["speedups"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
