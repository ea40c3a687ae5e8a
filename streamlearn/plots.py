"""PNG plots of prequential curves with drift markers (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_curves"]


def plot_curves(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    ylabel: str = "prequential accuracy (rolling)",
    true_drifts: Sequence[int] = (),
    detected: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """One line per curve; true drifts as grey bands, detections as ticks in the curve colour."""
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for position in true_drifts:
        ax.axvline(position, color="0.55", linestyle="--", linewidth=1.2)
    for label, (x, y) in curves.items():
        (line,) = ax.plot(x, y, linewidth=1.3, label=label)
        for position in (detected or {}).get(label, ()):
            ax.axvline(position, color=line.get_color(), linestyle=":", linewidth=1.0, alpha=0.8)
    if true_drifts:
        ax.plot([], [], color="0.55", linestyle="--", label="true drift")
    if detected:
        ax.plot([], [], color="0.2", linestyle=":", label="detected drift")
    ax.set_xlabel("events")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
