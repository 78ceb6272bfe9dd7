"""Reports every method writes the same way, so results of different methods table and plot together.

* ``metrics_<name>.json``: strict JSON (no NaN), via :func:`effvid.io.atomic_write_json`;
* ``predictions.jsonl``: one strict-JSON object per video (:func:`write_predictions`);
* ``results.json``: a list of :class:`ResultRow` - one row per (method, setting) of a demo or a
  sweep - read back by :func:`read_results` and drawn by :func:`effvid.plots.plot_results`.

Accuracy metrics are fractions in [0, 1] (``top1``, ``map``, ``hit1``, ``miou``, ``ap50``);
compute is GMACs per video (1e9 multiply-accumulates, measured by :mod:`effvid.flops`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from effvid.io import atomic_write_json, atomic_write_jsonl

__all__ = [
    "Evaluation",
    "cheapest_within",
    "check_finite_scores",
    "ResultRow",
    "StageClock",
    "format_results",
    "read_results",
    "write_predictions",
    "write_results",
]


@dataclass
class ResultRow:
    """One evaluated configuration of one method."""

    method: str
    """the method or model ("FrameExit", "static baseline", "VideoIQ")"""
    setting: str
    """what distinguishes this row within the method ("beta=0.003", "first 2 frames", "4-bit")"""
    metrics: dict[str, float]
    """accuracy metrics as fractions in [0, 1]; the first one is the main metric"""
    gmacs_per_video: float
    frames_per_video: float | None = None
    videos_per_s: float | None = None
    """measured throughput of the evaluation, where measured"""
    extra: dict[str, Any] = field(default_factory=dict)
    """method-specific figures (e.g. ``gbitops_per_video``, ``skip_rate``)"""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError(f"result row {self.method} / {self.setting} has no accuracy metric")
        for name, value in self.metrics.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(
                    f"result row {self.method} / {self.setting}: metric '{name}' = {value!r} is not a fraction in [0, 1]"
                )
        if not (math.isfinite(self.gmacs_per_video) and self.gmacs_per_video >= 0):
            raise ValueError(
                f"result row {self.method} / {self.setting}: gmacs_per_video {self.gmacs_per_video!r}"
            )

    @property
    def label(self) -> str:
        return f"{self.method}, {self.setting}" if self.setting else self.method

    def accuracy(self, metric: str | None = None) -> float:
        name = metric or next(iter(self.metrics))
        try:
            return self.metrics[name]
        except KeyError:
            raise KeyError(
                f"result row {self.label} has no metric '{name}'; it has {sorted(self.metrics)}"
            ) from None


def write_results(path: str | os.PathLike[str], rows: Sequence[ResultRow]) -> None:
    atomic_write_json(path, {"schema": "effvid-results-v1", "rows": [asdict(r) for r in rows]})


def read_results(path: str | os.PathLike[str]) -> list[ResultRow]:
    """Rows of a ``results.json``; a file of another shape is an error naming the file and row."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not a readable results file ({exc})") from None
    if not isinstance(data, Mapping) or data.get("schema") != "effvid-results-v1":
        raise ValueError(f"{p}: not an effvid results file (expected schema 'effvid-results-v1')")
    names = {f.name for f in fields(ResultRow)}
    rows = []
    for i, raw in enumerate(data.get("rows", [])):
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"{p}: row {i} has unknown key(s) {sorted(unknown)}")
        try:
            rows.append(ResultRow(**raw))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: row {i}: {exc}") from None
    return rows


def format_results(rows: Sequence[ResultRow], *, reference: ResultRow, metric: str | None = None) -> str:
    """A fixed-width table: accuracy (%), frames, GMACs/video, share of ``reference``'s GMACs, videos/s."""
    metric = metric or next(iter(reference.metrics))
    width = max(len(r.label) for r in rows)
    head = f"{'method':<{width}}  {metric + ' (%)':>9}  {'frames':>6}  {'GMACs/video':>11}  {'vs ref':>7}  {'videos/s':>8}"
    lines = [head]
    for r in rows:
        frames = f"{r.frames_per_video:>6.2f}" if r.frames_per_video is not None else f"{'-':>6}"
        speed = f"{r.videos_per_s:>8.1f}" if r.videos_per_s is not None else f"{'-':>8}"
        share = r.gmacs_per_video / reference.gmacs_per_video if reference.gmacs_per_video else float("nan")
        lines.append(
            f"{r.label:<{width}}  {100 * r.accuracy(metric):>9.2f}  {frames}  {r.gmacs_per_video:>11.4f}  "
            f"{share:>7.1%}  {speed}"
        )
    lines.append(f"(vs ref: share of the GMACs of '{reference.label}')")
    return "\n".join(lines)


def write_predictions(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """``predictions.jsonl``: one strict-JSON object per video (a NaN is an error naming the line)."""
    atomic_write_jsonl(path, list(rows))


class StageClock:
    """Elapsed time per stage of a long job (a demo), printed as it goes and kept in ``stages``."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = now - self.last
        self.last = now
        print(f"[{stage}: {self.stages[stage]:.0f} s; total {now - self.start:.0f} s]", flush=True)

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start


@dataclass
class Evaluation:
    """What an evaluation over a dataset gives: ``metrics`` for the whole set and one ``rows``
    entry per video. Packages subclass it with a ``summary()`` for the terminal."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def write(self, run_dir: str | os.PathLike[str], *, name: str = "eval") -> None:
        """``metrics_<name>.json`` and ``predictions.jsonl`` (one line per video), atomically."""
        run_dir = Path(run_dir)
        atomic_write_json(run_dir / f"metrics_{name}.json", self.metrics)
        write_predictions(run_dir / "predictions.jsonl", self.rows)

    def skipped_note(self) -> str:
        """A line on the videos ``data.on_missing: skip`` left out (from ``metrics["skipped_videos"]``),
        or an empty string when none were."""
        count = self.metrics.get("skipped_videos", {}).get("count", 0)
        return f"\nskipped (missing from storage, data.on_missing=skip): {count} video(s)" if count else ""


def cheapest_within(
    candidates: Iterable[ResultRow],
    reference: ResultRow,
    *,
    metric: str,
    tolerance: float,
    max_cost_share: float,
    cost: Callable[[ResultRow], float] = lambda row: row.gmacs_per_video,
) -> ResultRow | None:
    """The demos' target: the cheapest of ``candidates`` whose ``metrics[metric]`` is at most
    ``tolerance`` below the reference's and whose ``cost`` is at most ``max_cost_share`` of the
    reference's (GMACs per video by default); None when no candidate qualifies."""
    passing = [
        row
        for row in candidates
        if row.metrics[metric] >= reference.metrics[metric] - tolerance
        and cost(row) <= max_cost_share * cost(reference)
    ]
    return min(passing, key=cost) if passing else None


def check_finite_scores(scores: Any, keys: Sequence[str]) -> None:
    """Refuse class scores (N, K) with a NaN or inf, naming the first of the ``keys`` (N,) affected."""
    bad = [key for key, row in zip(keys, scores) if not row.isfinite().all()]
    if bad:
        raise FloatingPointError(
            f"the model gave non-finite class scores for {len(bad)} video(s), first '{bad[0]}'; "
            "check the weights (--checkpoint.init) and the input frames"
        )
