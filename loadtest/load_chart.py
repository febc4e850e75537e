"""RSS over time per process, one panel per budget, with the worker's ceiling drawn in.

The point of the picture: the worker's line stays under its ceiling, and the
ceiling moves with the budget while the load stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from service.units import MiB

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"worker": "tab:red", "api": "tab:blue", "moto": "tab:gray", "locust": "tab:green"}


@dataclass(frozen=True, slots=True)
class Panel:
    """One budget's series: name -> [(t seconds, rss bytes)], plus lines and marks."""

    budget_mb: int
    ceiling_mb: float
    series: dict[str, list[tuple[float, int]]]
    marks: Sequence[tuple[float, str]]
    passed: bool


def _y_limit(panel: Panel) -> float:
    """Scale to the worker and its ceiling; moto (GBs: it holds every object) may go off top."""
    worker = max((rss / MiB for _, rss in panel.series.get("worker", [])), default=0.0)
    return max(panel.ceiling_mb, worker) * 1.6


def draw(panels: Sequence[Panel], path: Path) -> None:
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, 3.6 * len(panels)), squeeze=False, sharex=False
    )
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        top = _y_limit(panel)
        for name, points in panel.series.items():
            if not points:
                continue
            ts = [t for t, _ in points]
            mib = [rss / MiB for _, rss in points]
            peak = max(mib)
            label = f"{name} (peak {peak:.0f}, off the chart)" if peak > top else name
            ax.plot(ts, mib, label=label, color=COLORS.get(name), linewidth=1.1)
        ax.set_ylim(0, top)
        ax.axhline(
            panel.ceiling_mb,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"worker ceiling {panel.ceiling_mb:.0f} MiB",
        )
        ax.axhline(
            panel.budget_mb,
            color="tab:orange",
            linestyle=":",
            linewidth=1,
            label=f"budget {panel.budget_mb} MiB",
        )
        for t, label in panel.marks:
            ax.axvline(t, color="black", linewidth=0.6, alpha=0.4)
            ax.annotate(
                label,
                (t, ax.get_ylim()[1]),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
                alpha=0.6,
            )
        verdict = "PASS" if panel.passed else "FAIL"
        ax.set_title(f"budget {panel.budget_mb} MiB: RSS per process ({verdict})", fontsize=10)
        ax.set_ylabel("RSS MiB")
        ax.set_xlabel("seconds since stack start")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
