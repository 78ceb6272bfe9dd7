"""``deltadist-demo --task detection`` end to end on a minimal benchmark (the dispatch, the table,
results.json), and the task option's validation."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("effdet")

from deltadist.config import DemoConfig
from deltadist.demo import run_demo
from deltadist.detection.config import DetectionDemoConfig


def test_detection_demo_runs_and_reports(tmp_path, capsys):
    detection = DetectionDemoConfig(
        root=str(tmp_path / "data"),
        train_videos=2,
        val_videos=1,
        num_frames=10,
        frames_per_video=2,
        fpn_channels=16,
        teacher_epochs=1,
        delta_epochs=1,
        batch_size=4,
        gate_init=-1.0,  # layers start on their low-rank students; one step cannot flip them
    )
    run_demo(DemoConfig(task="detection", detection=detection), tmp_path / "run")
    out = capsys.readouterr().out
    assert "teacher (frame-based)" in out and "delta (keyframe every 10)" in out and "target (AP50" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["teacher"]["frames"] == results["delta"]["frames"] == 10
    assert 0.0 <= results["delta"]["ap50"] <= 1.0
    assert 0.0 < results["macs_ratio"] < 1.0  # nine of ten frames run students
    assert results["delta"]["layers"] == 21
    assert results["threads"] >= 1 and 0.0 < results["cpu_seconds"] and "CPU time" in out


def test_task_must_be_known():
    with pytest.raises(ValueError, match="task must be one of segmentation, detection; got 'tracking'"):
        DemoConfig(task="tracking")
