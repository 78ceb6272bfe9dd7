"""Trade-off plot: a valid PNG of the requested size, and clear errors on bad input."""

from __future__ import annotations

import struct

import pytest

from effvid.plots import Point, Series, plot_tradeoff


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_writes_png_of_requested_size(tmp_path):
    out = tmp_path / "curve.png"
    plot_tradeoff(
        [
            Series("FrameExit", [1.0, 2.0, 3.5], [80.0, 90.0, 92.0], labels=["b=1", "b=0.1", "b=0.01"]),
            Series("other", [2.0, 4.0], [70.0, 85.0]),
        ],
        out,
        baselines=[Point("all frames", 10.0, 92.5), Point("1 frame", 1.0, 60.0)],
        title="synthetic",
        size=(5, 4),
        dpi=50,
    )
    assert png_size(out) == (250, 200)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left behind


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="needs at least one series or baseline"):
        plot_tradeoff([], tmp_path / "x.png")
    with pytest.raises(
        ValueError, match=r"series 'a' needs as many accuracy values as GMACs values \(>0\), got 2 and 1"
    ):
        plot_tradeoff([Series("a", [1, 2], [3])], tmp_path / "x.png")
    with pytest.raises(ValueError, match="series 'a' has 1 labels for 2 points"):
        plot_tradeoff([Series("a", [1, 2], [3, 4], labels=["x"])], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_results_rows_round_trip_and_plot_together(tmp_path):
    from effvid.plots import plot_results
    from effvid.reports import ResultRow, format_results, read_results, write_results

    rows = [
        ResultRow("static", "all frames", {"top1": 0.9}, 1.0, 10.0, 50.0),
        ResultRow("FrameExit", "beta=0.01", {"top1": 0.89}, 0.4, 4.0, 120.0),
        ResultRow("FrameExit", "beta=0.1", {"top1": 0.8}, 0.2, 2.0, 200.0),
        ResultRow("VideoIQ", "w=0.1", {"top1": 0.88, "map": 0.9}, 0.5, extra={"gbitops_per_video": 3.2}),
    ]
    write_results(tmp_path / "results.json", rows)
    assert read_results(tmp_path / "results.json") == rows
    table = format_results(rows, reference=rows[0])
    assert (
        "FrameExit, beta=0.01" in table
        and "40.0%" in table
        and "(vs ref: share of the GMACs of 'static, all frames')" in table
    )
    plot_results(rows, tmp_path / "all.png", metric="top1", title="three methods")
    assert (tmp_path / "all.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"metric 'top1' = 1\.5 is not a fraction"):
        ResultRow("x", "", {"top1": 1.5}, 1.0)
    (tmp_path / "bad.json").write_text(
        '{"schema": "effvid-results-v1", "rows": [{"method": "x", "color": 1}]}'
    )
    with pytest.raises(ValueError, match=r"bad\.json: row 0 has unknown key\(s\) \['color'\]"):
        read_results(tmp_path / "bad.json")


def test_cheapest_within_picks_the_demo_target_row():
    from effvid.reports import ResultRow, cheapest_within

    ref = ResultRow("static", "all frames", {"top1": 0.90}, 1.0, 10.0, 50.0)
    rows = [
        ResultRow("M", "a", {"top1": 0.895}, 0.45, 4.0, 1.0),  # within 1 point, 45 %: passes
        ResultRow("M", "b", {"top1": 0.891}, 0.30, 3.0, 1.0),  # within 1 point, 30 %: cheaper, passes
        ResultRow("M", "c", {"top1": 0.85}, 0.10, 1.0, 1.0),  # too inaccurate
        ResultRow("M", "d", {"top1": 0.95}, 0.60, 6.0, 1.0),  # too costly
    ]
    assert cheapest_within(rows, ref, metric="top1", tolerance=0.01, max_cost_share=0.5) is rows[1]
    assert cheapest_within(rows[2:], ref, metric="top1", tolerance=0.01, max_cost_share=0.5) is None
    by_frames = cheapest_within(
        [rows[0], rows[3]],
        ref,
        metric="top1",
        tolerance=0.01,
        max_cost_share=0.5,
        cost=lambda r: r.frames_per_video,
    )
    assert by_frames is rows[0]
