"""The GPU baseline run: every shipped example and a ResNet-18 BDWP training step, on one device.

``python -m baselines.gpu_suite --device cuda --out baselines/results`` measures, in order:

1. every shipped example that is a workload (``workloads/examples/*.yaml``; sweeps are not) with
   ``archsim baseline``'s measurement (:func:`baselines.measure.measure`): dense and 2:4 GEMMs
   of the BDWP layers, SpGEMM of the shipped matrices, attention at the example shapes;
2. ``resnet18_bdwp_2of4``: the BDWP example with its 2:8 pattern set to 2:4, so the GPU's 2:4
   kernels and the accelerator's N:M can be compared on the very pattern the GPU supports, and
   ``bert_inference_dense``: the 2:4 BERT example made dense, the GPU's reference for its
   larger GEMMs (``resnet18_dense`` is ResNet-18's);
3. ``resnet18_training_step``: whole ResNet-18 training iterations, dense against 2:4
   (:mod:`baselines.train_step`);
4. the examples with block attention patterns again through compiled FlexAttention
   (``<example>_flex``), whose compile time makes them the first thing to drop.

Each part writes ``<out>/<device>/<part>.json`` as soon as it finishes (``<device>`` from the
GPU's name, e.g. ``nvidia-h200``), and ``manifest.json`` records every part's status, seconds
and, for a failure, the error: one part failing never loses the others. ``--budget-s`` stops
starting parts once that many seconds have passed (a device lease is short); skipped parts say
so in the manifest. ``--only`` runs the named parts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workloads.errors import ArchsimError

__all__ = ["Part", "plan", "device_slug", "run_suite", "main"]

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "workloads" / "examples"

#: Parts that run first, in this order (the ResNet-18 comparison is what the lease is for);
#: the other examples follow in name order.
_FIRST = ("tiny_gemm", "resnet18_dense", "resnet18_bdwp", "resnet18_bdwp_2of4",
          "resnet18_training_step")

#: Extra parts built from an example with overrides: (part name, example, overrides).
_VARIANTS = (("resnet18_bdwp_2of4", "resnet18_bdwp", ("sparsity.m=4",)),
             ("bert_inference_dense", "bert_inference_nm", ("sparsity={kind: dense}",)))


@dataclass(frozen=True, slots=True)
class Part:
    """One measurement of the suite, written to ``<name>.json``."""

    name: str
    kind: str  # "baseline" | "training_step"
    source: Path | None = None
    overrides: tuple[str, ...] = ()
    flex_compile: bool = False


@dataclass
class _Outcome:
    name: str
    status: str  # "ok" | "failed" | "skipped"
    seconds: float = 0.0
    file: str | None = None
    error: str | None = None
    summary: dict = field(default_factory=dict)


def _workloads(examples_dir: Path) -> dict[str, object]:
    """The shipped examples that load as workloads (sweep files do not), by file stem."""
    from workloads.load import load_workload

    found = {}
    for path in sorted(examples_dir.glob("*.yaml")):
        try:
            found[path.stem] = load_workload(path)
        except ArchsimError:
            continue
    return found


def plan(examples_dir: Path = EXAMPLES_DIR, only: tuple[str, ...] = ()) -> list[Part]:
    """The parts in the order they run (cheap and essential first, FlexAttention last)."""
    from baselines.measure import BLOCK_PATTERNS, workload_attention

    loaded = _workloads(examples_dir)
    parts = [Part(stem, "baseline", examples_dir / f"{stem}.yaml") for stem in loaded]
    parts += [Part(name, "baseline", examples_dir / f"{stem}.yaml", overrides)
              for name, stem, overrides in _VARIANTS if stem in loaded]
    parts.append(Part("resnet18_training_step", "training_step"))
    parts += [Part(f"{stem}_flex", "baseline", examples_dir / f"{stem}.yaml", flex_compile=True)
              for stem, w in loaded.items()
              if any(a.op.pattern.kind in BLOCK_PATTERNS for a in workload_attention(w))]
    parts.sort(key=lambda p: (p.flex_compile, _rank(p.name)))
    if only:
        unknown = sorted(set(only) - {p.name for p in parts})
        if unknown:
            raise ArchsimError(f"--only: no part named {', '.join(unknown)}; parts: "
                               f"{', '.join(p.name for p in parts)}")
        parts = [p for p in parts if p.name in only]
    return parts


def _rank(name: str) -> int:
    return _FIRST.index(name) if name in _FIRST else len(_FIRST)


def device_slug(name: str) -> str:
    """A folder name for a device: ``NVIDIA H200`` → ``nvidia-h200``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def _write_json(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # renamed into place: never half a file
    tmp.write_text(text)
    tmp.replace(path)


def _run_baseline(part: Part, device: str, reps: int, warmup: int) -> tuple[str, dict]:
    from baselines.measure import measure
    from workloads.load import load_workload

    workload = load_workload(part.source, overrides=list(part.overrides))
    doc = measure(workload, device=device, reps=reps, warmup=warmup,
                  flex_compile=part.flex_compile)
    methods: dict[str, int] = {}
    for row in doc.ops:
        methods[row.method] = methods.get(row.method, 0) + 1
    return doc.to_json(), {"seconds_measured": doc.totals.seconds, "ops": doc.totals.ops,
                           "methods": methods, "warnings": list(doc.warnings)}


def _run_step(device: str, step: dict) -> tuple[str, dict]:
    from baselines.train_step import measure_training_step

    dtype = "fp16" if device == "cuda" else "fp32"
    doc = measure_training_step(device=device, dtype=dtype, **step)
    summary = {r["variant"]: r["median_s"] for r in doc["variants"]}
    summary.update(doc["speedups"])
    if "check" in doc:
        summary.update({k: v for k, v in doc["check"].items() if k.startswith("grad_error")})
    return json.dumps(doc, indent=1) + "\n", summary


def run_suite(parts: list[Part], out: Path, *, device: str, budget_s: float, reps: int = 20,
              warmup: int = 3, step: dict | None = None,
              log: Callable[[str], None] = print) -> list[_Outcome]:
    """Run ``parts`` in order into ``out``; ``manifest.json`` is rewritten after every part."""
    t0 = time.monotonic()
    outcomes = [_Outcome(p.name, "skipped", error="not reached") for p in parts]
    for i, part in enumerate(parts):
        if time.monotonic() - t0 > budget_s:
            outcomes[i].error = f"budget of {budget_s:.0f} s spent before it started"
            continue
        start = time.monotonic()
        log(f"[{start - t0:7.1f} s] {part.name} …")
        try:
            if part.kind == "training_step":
                text, summary = _run_step(device, step or {})
            else:
                text, summary = _run_baseline(part, device, reps, warmup)
            _write_json(out / f"{part.name}.json", text)
            outcomes[i] = _Outcome(part.name, "ok", time.monotonic() - start,
                                   f"{part.name}.json", summary=summary)
        except Exception as exc:  # a failed part is recorded, and the others still run
            tb = traceback.format_exception(exc)
            outcomes[i] = _Outcome(part.name, "failed", time.monotonic() - start,
                                   error=_cut("".join(tb[-6:])))
        log(f"          {part.name}: {outcomes[i].status} in {outcomes[i].seconds:.1f} s")
        _write_manifest(out, outcomes, device, time.monotonic() - t0)
    _write_manifest(out, outcomes, device, time.monotonic() - t0)
    return outcomes


def _cut(text: str, keep: int = 1500) -> str:
    """An error message short enough to read: a compiler's output can run to megabytes."""
    if len(text) <= 2 * keep:
        return text
    return f"{text[:keep]}\n[… {len(text) - 2 * keep} characters cut …]\n{text[-keep:]}"


def _write_manifest(out: Path, outcomes: list[_Outcome], device: str, elapsed: float) -> None:
    doc = {"kind": "archsim-gpu-suite", "device": device, "elapsed_s": elapsed,
           "parts": [vars(o) for o in outcomes]}
    _write_json(out / "manifest.json", json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--out", default="baselines/results",
                   help="results folder; each device writes into its own subfolder")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="start no part after this many seconds")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", nargs="*", default=(), help="run only these parts")
    p.add_argument("--step-batch", type=int, default=32)
    p.add_argument("--step-image", type=int, default=224)
    p.add_argument("--step-iters", type=int, default=10)
    args = p.parse_args(argv)
    try:
        for flag in ("reps", "step_batch", "step_image", "step_iters"):
            if getattr(args, flag) < 1:
                raise ArchsimError(f"--{flag.replace('_', '-')} must be at least 1, "
                                   f"got {getattr(args, flag)}")
        if args.warmup < 0:
            raise ArchsimError(f"--warmup must be at least 0, got {args.warmup}")
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            raise ArchsimError("--device cuda: no CUDA device is available; use --device cpu")
        name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        parts = plan(only=tuple(args.only))
    except ArchsimError as exc:
        print(f"archsim: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) / device_slug(name)
    out.mkdir(parents=True, exist_ok=True)
    step = {"batch": args.step_batch, "image": args.step_image, "iters": args.step_iters}
    outcomes = run_suite(parts, out, device=args.device, budget_s=args.budget_s, reps=args.reps,
                         warmup=args.warmup, step=step,
                         log=lambda s: print(s, flush=True))
    failed = [o.name for o in outcomes if o.status != "ok"]
    print(f"wrote {out}: {len(outcomes) - len(failed)} of {len(outcomes)} parts ok"
          + (f"; not ok: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
