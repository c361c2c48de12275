"""Figures of a run, written as PNG (matplotlib, non-interactive Agg backend)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_reward_curve(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = "GRPO"
) -> None:
    """Training reward mean (with its std band) and greedy eval reward against the step.

    Args:
        records: ``metrics.jsonl`` records (``rar_jax.metrics.read_metrics``).
        path: the PNG to write.
        title: the figure title.
    """
    train = [r for r in records if "reward/mean" in r and not math.isnan(r["reward/mean"])]
    evals = [r for r in records if "eval/reward_mean" in r and not math.isnan(r["eval/reward_mean"])]
    if not train and not evals:
        raise ValueError(f"no reward/mean or eval/reward_mean values to plot for {os.fspath(path)}")
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        steps = [r["step"] for r in train]
        mean = [r["reward/mean"] for r in train]
        std = [r.get("reward/std", 0.0) for r in train]
        axes.plot(steps, mean, marker="o", markersize=3, label="train reward (mean of G answers)")
        axes.fill_between(steps, [m - s for m, s in zip(mean, std)],
                          [m + s for m, s in zip(mean, std)], alpha=0.2)
    if evals:
        axes.plot([r["step"] for r in evals], [r["eval/reward_mean"] for r in evals],
                  marker="s", label="held-out reward (greedy)")
    axes.set_xlabel("step")
    axes.set_ylabel("reward")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(os.fspath(path))
    plt.close(figure)


def plot_accuracy_by_judge(
    judges: Sequence[str],
    series: Mapping[str, Sequence[tuple[float, float, float]]],
    path: str | os.PathLike[str],
    *,
    title: str = "Judge alignment",
    ylabel: str = "pairwise accuracy",
) -> None:
    """Accuracy against the judge (the paper's Figure 3): one line per condition, with error bars.

    Args:
        judges: the judge names, in x-axis order.
        series: condition label -> per judge ``(accuracy, interval low, interval high)``; NaN
            where nothing was scored (that point is left out of the line).
        path: the PNG to write.
        title: the figure title.
        ylabel: the y-axis label.
    """
    if not judges or not series:
        raise ValueError(f"nothing to plot for {os.fspath(path)}: no judges or no conditions")
    figure, axes = plt.subplots(figsize=(max(5.0, 1.6 * len(judges) + 2.5), 4), dpi=100)
    positions = list(range(len(judges)))
    for label, points in series.items():
        if len(points) != len(judges):
            raise ValueError(f"series {label!r}: expected {len(judges)} points, got {len(points)}")
        accuracy = [p[0] for p in points]
        below = [p[0] - p[1] if not math.isnan(p[0]) else math.nan for p in points]
        above = [p[2] - p[0] if not math.isnan(p[0]) else math.nan for p in points]
        axes.errorbar(positions, accuracy, yerr=[below, above], marker="o", capsize=4, label=label)
    axes.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    axes.set_xticks(positions)
    axes.set_xticklabels(judges, rotation=15, ha="right")
    axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("judge")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.fspath(path))
    plt.close(figure)
