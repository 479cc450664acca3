"""Accuracy check of BDWP: a small CNN on scikit-learn's digits, dense vs BDWP 2:8 vs BDWP 2:4.

Run ``python -m baselines.bdwp.train_digits [--seeds 0 1 2] [--epochs E] [--out FILE.json]``.

The digits set (1,797 8×8 grey images, 10 classes) ships with scikit-learn, so the check runs
offline in a few minutes on 2 CPU cores. The train/test split is fixed (``SPLIT_SEED``) for every
run; the run seed changes only the weight initialisation and the batch order, so the spread
across seeds measures training noise, not split luck.

Which layers are pruned: ``conv2`` (32→64 channels) and ``fc1`` (1024→128). ``conv1`` stays dense
because its single input channel cannot form an FF group of M along ``C_in``; ``fc2`` stays dense
because its 10 outputs cannot form BP groups of M along ``out``. Keeping the first and last layers
dense is also common practice in N:M training, since they hold few of the MACs. The two pruned
layers hold 99 % of the weights and 98.5 % of the MACs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workloads.arith import ceil_div

from .functions import DEFAULT_DECAY
from .modules import BDWPConv2d, BDWPLinear

__all__ = [
    "CONFIGS",
    "SPLIT_SEED",
    "DigitsCNN",
    "TrainConfig",
    "format_table",
    "load_digits_split",
    "main",
    "run_experiment",
    "train_one",
]

#: Seed of the fixed, stratified train/test split (25 % test = 450 images).
SPLIT_SEED = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """One row of the comparison: how the pruned layers (``conv2``, ``fc1``) are trained."""

    name: str
    mode: str  # "dense" | "nm_ff_only" | "bdwp"
    n: int = 2
    m: int = 8
    bp_mask_source: str = "dense"
    decay: float = DEFAULT_DECAY


CONFIGS = (
    TrainConfig(name="dense", mode="dense"),
    TrainConfig(name="bdwp 2:8", mode="bdwp", n=2, m=8),
    TrainConfig(name="bdwp 2:4", mode="bdwp", n=2, m=4),
)


class DigitsCNN(nn.Module):
    """conv(1→32) → conv(32→64) → maxpool → fc(1024→128) → fc(128→10), ReLU between.

    Parameters
    ----------
    config : TrainConfig
        Applied to ``conv2`` and ``fc1``; ``conv1`` and ``fc2`` are always dense (see the module
        docstring for why).
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        opts = dict(
            n=config.n, m=config.m, mode=config.mode,
            bp_mask_source=config.bp_mask_source, decay=config.decay,
        )
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = BDWPConv2d(32, 64, 3, padding=1, **opts)
        self.fc1 = BDWPLinear(64 * 4 * 4, 128, **opts)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits images as ``[B, 1, 8, 8]`` float32 in [0, 1], split 75/25 with ``SPLIT_SEED``.

    Returns
    -------
    (x_train, y_train, x_test, y_test)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16 (counts of set pixels in 4x4 blocks of the original 32x32 bitmaps).
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.25, random_state=SPLIT_SEED,
        stratify=y.numpy(),
    )
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train_one(
    config: TrainConfig,
    seed: int,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 0.05,
) -> float:
    """Train one model from scratch and return its test accuracy (fraction in [0, 1]).

    SGD with momentum 0.9 and a cosine learning-rate schedule: SR-STE was designed and tuned
    with SGD; adaptive optimizers rescale its decay term per weight.
    """
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = DigitsCNN(config)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    steps_per_epoch = ceil_div(len(y_train), batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    order_gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=order_gen)
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return _accuracy(model, x_test, y_test)


def run_experiment(
    *,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 30,
    threads: int = 2,
    configs: Sequence[TrainConfig] = CONFIGS,
    train_subset: int | None = None,
    batch_size: int = 32,
    lr: float = 0.05,
) -> dict[str, Any]:
    """Train every config with every seed; return a JSON-ready summary.

    Parameters
    ----------
    seeds : sequence of int
        Run seeds (weight init and batch order); the split is fixed.
    epochs : int
        Epochs per run.
    threads : int
        ``torch.set_num_threads`` value, set explicitly because timings and (slightly) results
        depend on it.
    configs : sequence of TrainConfig
        Configurations to compare.
    train_subset : int or None
        Train on only the first this-many training images (for quick pipeline tests).
    batch_size, lr : int, float
        SGD batch size and peak learning rate.

    Returns
    -------
    dict
        ``configs`` (per config: options, per-seed accuracies, mean, std, wall seconds) and the
        run's provenance (epochs, seeds, torch version, threads, wall time, split).

    Raises
    ------
    ValueError
        If ``seeds`` is empty or ``epochs``/``threads`` is not positive.
    """
    if not seeds:
        raise ValueError("seeds must not be empty")
    if epochs < 1 or threads < 1:
        raise ValueError(f"epochs and threads must be >= 1, got epochs={epochs}, threads={threads}")
    torch.set_num_threads(threads)
    data = load_digits_split()
    if train_subset is not None:
        data = (data[0][:train_subset], data[1][:train_subset], data[2], data[3])
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    for config in configs:
        t_config = time.perf_counter()
        accs = [
            train_one(config, seed, data, epochs=epochs, batch_size=batch_size, lr=lr)
            for seed in seeds
        ]
        results[config.name] = {
            **asdict(config),
            "accuracies": accs,
            "mean": statistics.fmean(accs),
            # Sample standard deviation (n-1); 0.0 for a single seed rather than an error.
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "wall_s": time.perf_counter() - t_config,
        }
    return {
        "dataset": {
            "name": "sklearn.datasets.load_digits",
            "n_train": len(data[1]),
            "n_test": len(data[3]),
            "split_seed": SPLIT_SEED,
        },
        "model": "conv1(1->32,3x3) conv2(32->64,3x3) maxpool2 fc1(1024->128) fc2(128->10)",
        "pruned_layers": ["conv2", "fc1"],
        "dense_layers": ["conv1", "fc2"],
        "optimizer": f"SGD(momentum=0.9, lr={lr}, cosine), batch {batch_size}",
        "epochs": epochs,
        "seeds": list(seeds),
        "std_definition": "sample standard deviation (n-1)",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_time_s": time.perf_counter() - t_start,
        "configs": results,
    }


def format_table(result: dict[str, Any]) -> str:
    """Render ``run_experiment``'s result as a Markdown table (accuracy in percent)."""
    dense = result["configs"].get("dense")
    lines = [
        "| config | test accuracy % (mean ± std) | Δ vs dense (pts) | per seed | wall s |",
        "|---|---|---|---|---|",
    ]
    for name, r in result["configs"].items():
        delta = f"{100 * (r['mean'] - dense['mean']):+.2f}" if dense else "n/a"
        per_seed = ", ".join(f"{100 * a:.2f}" for a in r["accuracies"])
        lines.append(
            f"| {name} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {delta} | {per_seed} "
            f"| {r['wall_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m baselines.bdwp.train_digits",
        description="Train a small CNN on sklearn digits: dense vs BDWP 2:8 vs BDWP 2:4.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads value")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--bp-mask-source", choices=("dense", "forward_masked"), default="dense",
        help="where the BDWP configs compute the BP mask from",
    )
    parser.add_argument(
        "--train-subset", type=int, default=None, help="use only this many training images"
    )
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    args = parser.parse_args(argv)

    configs = [
        c if c.mode == "dense" else TrainConfig(
            name=c.name, mode=c.mode, n=c.n, m=c.m, bp_mask_source=args.bp_mask_source,
            decay=c.decay,
        )
        for c in CONFIGS
    ]
    try:
        result = run_experiment(
            seeds=args.seeds, epochs=args.epochs, threads=args.threads, configs=configs,
            train_subset=args.train_subset, batch_size=args.batch_size, lr=args.lr,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = "python -m baselines.bdwp.train_digits " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(format_table(result))
    print(
        f"\nepochs={result['epochs']} seeds={result['seeds']} threads={result['threads']} "
        f"torch={result['torch_version']} bp_mask_source={args.bp_mask_source} "
        f"wall={result['wall_time_s']:.1f} s"
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
