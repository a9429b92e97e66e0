"""What `evdlm demo` prints and plots, on a made-up run (no simulation needed).

Not a terminal: readable lines (no Python dict reprs, no wrapping at 80 columns). The plot:
the x axis starts at the first sample, the y axes leave room above the highest line, and the
legends sit off the data.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from evdlm.sim.demo import DemoResult, Sample, demo_figure, plot_demo, print_summary, progress_line

CHARGERS = ("CP01", "CP02", "CP03")


def _result() -> DemoResult:
    result = DemoResult(dr_window=(1200.0, 1800.0), dr_limit_w=25_000.0, outage_window=(2400.0, 2520.0))
    # The site's start-up took 9.5 simulated minutes: the first sample is at 570 s.
    for index in range(300):
        t_s = 570.0 + 10.0 * index
        fallback = 2400.0 <= t_s < 2520.0
        result.samples.append(
            Sample(
                t_s=t_s,
                grid_w=20_000.0 + 100.0 * (index % 50),
                import_limit_w=30_000.0 if fallback else (25_000.0 if 1200.0 <= t_s < 1800.0 else 55_000.0),
                dr_limit_w=25_000.0 if 1200.0 <= t_s < 1800.0 else None,
                pv_w=8_000.0,
                battery_w=-2_000.0,
                ev_w=15_000.0,
                limits={charger: 32.0 if index % 7 else 16.0 for charger in CHARGERS},
                grid_fallback=fallback,
            )
        )
        result.cycle_durations_s.append(0.004)
    result.cycles = 300
    result.plot_path = Path("/tmp/demo-out/demo.png")
    result.recording_dir = Path("/tmp/demo-out/recordings")
    return result


def test_progress_line_has_no_dict_repr() -> None:
    line = progress_line(_result().samples[0], {"active": 5, "idle": 3})
    assert "{'" not in line and "{" not in line
    assert line.endswith("EVSEs 5 active, 3 idle")


def test_summary_off_a_terminal_is_plain_unwrapped_lines() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    print_summary(console, _result())
    text = out.getvalue()
    assert "{'" not in text
    assert not any(char in text for char in "┏┃│━─╇")  # no table frame
    lines = text.splitlines()
    assert lines[0] == "evdlm demo — summary"
    # One line per figure: the long ones run past 80 columns rather than wrap.
    changes = next(line for line in lines if line.startswith("import-limit changes: "))
    assert "+40.0 min 55.0 → 30.0 kW grid fallback" in changes and len(changes) > 80
    assert all(": " in line for line in lines[1:])


def test_summary_on_a_terminal_is_a_table() -> None:
    out = io.StringIO()
    print_summary(Console(file=out, force_terminal=True, width=120), _result())
    assert "evdlm demo — summary" in out.getvalue() and "│" in out.getvalue()


def test_plot_spans_the_data_with_headroom_and_legends_off_the_axes(tmp_path: Path) -> None:
    result = _result()
    figure = demo_figure(result, "demo")
    top, bottom = figure.axes
    figure.canvas.draw()
    # x: from the first sample (9.5 min), not from 0.
    assert top.get_xlim()[0] == 9.5 and bottom.get_xlim()[0] == 9.5
    assert top.get_xlim()[1] == result.samples[-1].t_s / 60
    # y: the highest line (the 55 kW limit, the 32 A limits) is below the top of its axes.
    assert top.get_ylim()[1] > 55.0 * 1.05
    assert bottom.get_ylim()[1] > 32.0 * 1.05
    # The legends are right of the axes, not over the data.
    renderer = figure.canvas.get_renderer()
    for ax in (top, bottom):
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
        # ... and inside the figure.
        assert legend.get_window_extent(renderer).x1 <= figure.bbox.x1 + 1
    path = plot_demo(result, tmp_path / "demo.png", "demo")
    assert path.stat().st_size > 10_000
