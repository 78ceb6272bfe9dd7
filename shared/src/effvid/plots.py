"""Accuracy-versus-compute figures (PNG) for one or several methods."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from effvid.io import atomic_path

__all__ = ["Point", "Series", "plot_results", "plot_tradeoff"]


@dataclass(frozen=True)
class Series:
    """One method's trade-off curve: accuracy at several compute budgets (e.g. thresholds or beta)."""

    name: str
    gmacs: Sequence[float]
    accuracy: Sequence[float]
    labels: Sequence[str] | None = None  # optional per-point annotations (e.g. "beta=1e-3")


@dataclass(frozen=True)
class Point:
    """A static baseline: one accuracy at one compute figure."""

    name: str
    gmacs: float
    accuracy: float


_MARKERS = ("s", "D", "^", "v", "P", "X", "*")


def plot_tradeoff(
    series: Sequence[Series],
    path: str | os.PathLike[str],
    *,
    baselines: Sequence[Point] = (),
    title: str | None = None,
    xlabel: str = "GMACs per video",
    ylabel: str = "accuracy (%)",
    size: tuple[float, float] = (6.4, 4.8),
    dpi: int = 100,
) -> None:
    """Draw every series as a line with points and every baseline as a marker; write a PNG."""
    if not series and not baselines:
        raise ValueError("plot_tradeoff needs at least one series or baseline")
    for s in series:
        if len(s.gmacs) == 0 or len(s.gmacs) != len(s.accuracy):
            raise ValueError(
                f"series '{s.name}' needs as many accuracy values as GMACs values (>0), "
                f"got {len(s.gmacs)} and {len(s.accuracy)}"
            )
        if s.labels is not None and len(s.labels) != len(s.gmacs):
            raise ValueError(f"series '{s.name}' has {len(s.labels)} labels for {len(s.gmacs)} points")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        for s in series:
            order = sorted(range(len(s.gmacs)), key=lambda i: s.gmacs[i])
            xs = [s.gmacs[i] for i in order]
            ys = [s.accuracy[i] for i in order]
            ax.plot(xs, ys, marker="o", label=s.name)
            if s.labels is not None:
                for rank, i in enumerate(order):  # alternate above/below so neighbours do not collide
                    offset = (4, 6) if rank % 2 else (4, -11)
                    ax.annotate(
                        s.labels[i],
                        (s.gmacs[i], s.accuracy[i]),
                        textcoords="offset points",
                        xytext=offset,
                        fontsize=7,
                    )
        for i, b in enumerate(baselines):
            ax.scatter(
                [b.gmacs],
                [b.accuracy],
                marker=_MARKERS[i % len(_MARKERS)],
                s=70,
                zorder=3,
                label=b.name,
                edgecolors="black",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def plot_results(
    rows: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    metric: str | None = None,
    title: str | None = None,
) -> None:
    """Draw :class:`~effvid.reports.ResultRow` s: rows of a method with several settings as one
    labelled curve, single-row methods as markers - so several methods share one figure."""
    by_method: dict[str, list[Any]] = {}
    for r in rows:
        by_method.setdefault(r.method, []).append(r)
    series, points = [], []
    for method, group in by_method.items():
        if len(group) == 1:
            r = group[0]
            points.append(Point(r.label, r.gmacs_per_video, 100 * r.accuracy(metric)))
        else:
            series.append(
                Series(
                    method,
                    [r.gmacs_per_video for r in group],
                    [100 * r.accuracy(metric) for r in group],
                    labels=[r.setting for r in group],
                )
            )
    name = metric or next(iter(rows[0].metrics))
    plot_tradeoff(series, path, baselines=points, title=title, ylabel=f"{name} (%)")
