"""The report's figures draw what a kernel engineer reads: latency as lines over sequence length per
family of shapes (the rest as points in one panel), and no candidate that has nothing to draw."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from attnbench import plots
from attnbench.plots import OTHER_SHAPES, drawn_candidates, latency_families
from attnbench.workloads import Shape, describe_mask

# The `cpu:` shapes of config/config.yaml, as the default CPU run measures them.
CPU_SHAPES = [
    {"name": "b2_h8_s128_d64", "batch": 2, "heads": 8, "seq": 128, "dim": 64, "causal": False},
    {"name": "b2_h8_s256_d64", "batch": 2, "heads": 8, "seq": 256, "dim": 64, "causal": False},
    {"name": "b2_h8_s512_d64", "batch": 2, "heads": 8, "seq": 512, "dim": 64, "causal": False},
    {"name": "b2_h8_s1024_d64", "batch": 2, "heads": 8, "seq": 1024, "dim": 64, "causal": False},
    {"name": "b2_h8_s128_d64_causal", "batch": 2, "heads": 8, "seq": 128, "dim": 64, "causal": True},
    {"name": "b2_h8_s256_d64_causal", "batch": 2, "heads": 8, "seq": 256, "dim": 64, "causal": True},
    {"name": "b2_h8_s512_d64_causal", "batch": 2, "heads": 8, "seq": 512, "dim": 64, "causal": True},
    {"name": "b2_h8_s1024_d64_causal", "batch": 2, "heads": 8, "seq": 1024, "dim": 64, "causal": True},
    {"name": "b2_h8_kv2_s512_d64_gqa", "batch": 2, "heads": 8, "kv_heads": 2, "seq": 512, "dim": 64,
     "causal": True},
    {"name": "packed_docs_456_d64", "heads": 8, "dim": 64, "causal": True, "seq_lens": [37, 128, 91, 200]},
    {"name": "decode_b4_kv2_d64", "batch": 4, "heads": 8, "kv_heads": 2, "dim": 64,
     "cache_lens": {"min": 64, "max": 512, "mean": 160, "seed": 0}},
]  # fmt: skip
OTHER_CPU_SHAPES = ["b2_h8_kv2_s512_d64_gqa", "packed_docs_456_d64", "decode_b4_kv2_d64"]
NAIVE = "examples.kernels:naive_attention"  # declines packed and decode shapes, as on the CPU
CPU_CANDIDATES = ["flash", "efficient", "cudnn", "math", NAIVE]


def cpu_status(candidate: str, shape: Shape) -> str:
    """As the default CPU run ended: the CUDA-only backends unsupported everywhere."""
    if candidate in ("efficient", "cudnn") or (candidate == NAIVE and shape.seq_lens):
        return "unsupported"
    return "ok"


def summary(entries: list[dict[str, Any]], candidates: list[str], status: Any = cpu_status) -> pd.DataFrame:
    """A summary table (report.summary_frame's columns the figures read), reference math, one row per
    shape and candidate; latency grows with the shape's work, faster for later candidates."""
    rows = []
    for entry in entries:
        shape = Shape.from_config(entry)
        work = shape.batch * shape.heads * shape.seq * shape.seq_kv * shape.dim * 1e-8
        for rank, candidate in enumerate(candidates):
            ok = status(candidate, shape) == "ok"
            median = work / (1 + rank) if ok else np.nan
            rows.append({
                "shape": shape.name, "candidate": candidate, "status": status(candidate, shape),
                "median_ms": median, "ci95_lo_ms": median * 0.98, "ci95_hi_ms": median * 1.02,
                "speedup": work / median if ok and candidate != "math" else np.nan,
                "reference": "math", "verdict": "faster" if ok else None,
                "tflops": 1.0 / median, "intensity": 10.0 * (1 + rank), "workspace_mb": median,
                "device_total_mb": np.nan, "rel_error": 1e-7 if ok else np.nan,
                "declared_tolerance": np.nan, "pareto_front": ok,
                "batch": shape.batch, "heads": shape.heads, "kv_heads": shape.kv_heads, "seq": shape.seq,
                "seq_kv": shape.seq_kv, "dim": shape.dim, "dtype": "float32", "mode": "forward",
                "attention": describe_mask(shape.as_dict()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def drawn_figures(frame: pd.DataFrame) -> dict[str, Figure]:
    """plots.figures' figures before they become PNG bytes, laid out as the PNG is."""

    def laid_out(fig: Figure) -> Figure:
        FigureCanvasAgg(fig).draw()
        return fig

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "_png", laid_out)
        return plots.figures(frame, {"matmul": {}}, {})  # type: ignore[return-value]


@pytest.fixture(scope="module")
def cpu_figures() -> dict[str, Figure]:
    return drawn_figures(summary(CPU_SHAPES, CPU_CANDIDATES))


def texts(fig: Figure) -> str:
    """Every text the figure shows (titles, labels, legend), lines joined."""
    return " ".join(t.get_text().replace("\n", " ") for t in fig.findobj(Text))


def legend_names(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []


def test_the_default_cpu_shapes_draw_a_line_panel_per_pattern_and_one_of_other_shapes() -> None:
    """Shapes that differ only in sequence length share a panel; GQA, packed and decode are not a
    panel of one point each."""
    panels = latency_families(summary(CPU_SHAPES, CPU_CANDIDATES))
    assert panels == {
        "dim=64, causal, batch=2": [f"b2_h8_s{s}_d64_causal" for s in (128, 256, 512, 1024)],
        "dim=64, non-causal, batch=2": [f"b2_h8_s{s}_d64" for s in (128, 256, 512, 1024)],
        OTHER_SHAPES: OTHER_CPU_SHAPES,
    }


def test_the_latency_figure_has_those_panels_with_nothing_cut_or_overlapping(
    cpu_figures: dict[str, Figure],
) -> None:
    fig = cpu_figures["latency"]
    assert [ax.get_title() for ax in fig.axes] == [
        "dim=64, causal, batch=2",
        "dim=64, non-causal, batch=2",
        OTHER_SHAPES,
    ]
    assert legend_names(fig) == ["flash", "math", NAIVE]
    other = fig.axes[-1]
    assert [t.get_text() for t in other.get_xticklabels()] == OTHER_CPU_SHAPES
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    page = fig.bbox
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    boxes += [t.get_window_extent(renderer) for t in other.get_xticklabels()]
    boxes += [fig.legends[0].get_window_extent(renderer)]
    for box in boxes:
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    titles = boxes[:3]
    assert not any(a.overlaps(b) for i, a in enumerate(titles) for b in titles[i + 1 :])


def test_a_sweep_at_a_fixed_token_budget_is_one_line_and_two_budgets_two() -> None:
    """The GPU sweep keeps batch x seq fixed: batch differs at every point but is no panel of its own."""
    sweep = [
        {"name": f"b{16384 // s}_s{s}", "batch": 16384 // s, "heads": 16, "seq": s, "dim": 128}
        for s in (512, 1024, 2048, 4096)
    ]
    assert latency_families(summary(sweep, ["flash", "math"])) == {
        "dim=128, non-causal, batch x seq = 16384": [e["name"] for e in sweep]
    }
    larger = [{**e, "name": f"{e['name']}_x2", "batch": 2 * e["batch"]} for e in sweep]
    assert latency_families(summary(sweep + larger, ["flash", "math"])) == {
        "dim=128, non-causal, batch x seq = 16384": [e["name"] for e in sweep],
        "dim=128, non-causal, batch x seq = 32768": [e["name"] for e in larger],
    }


def test_a_candidate_without_a_result_on_any_shape_is_left_out_and_named() -> None:
    frame = summary(CPU_SHAPES, CPU_CANDIDATES)
    kept, note = drawn_candidates(frame, "median_ms", "timing")
    assert kept == ["flash", "math", NAIVE]  # naive: a result on some shapes is enough
    assert note == "not shown: efficient, cudnn (unsupported)"
    ran = frame[~frame["candidate"].isin(["efficient", "cudnn"])]
    assert drawn_candidates(ran, "median_ms", "timing") == (["flash", "math", NAIVE], "")
    # ok but without the figure's number, e.g. no speedup: the reference itself
    assert drawn_candidates(frame, "speedup", "speedup").note == (
        "not shown: efficient, cudnn (unsupported); math (no speedup)"
    )


@pytest.mark.parametrize("key", plots.PLOTS)
def test_every_figure_leaves_out_the_candidates_with_no_result_and_says_so(
    key: str, cpu_figures: dict[str, Figure]
) -> None:
    fig = cpu_figures[key]
    if key == "speedup":  # math is the reference throughout: the title says so
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["flash", NAIVE]
    else:
        assert legend_names(fig) == ["flash", "math", NAIVE]
    assert "not shown: efficient, cudnn (unsupported)" in texts(fig)


def test_no_note_when_every_candidate_is_drawn() -> None:
    figures = drawn_figures(summary(CPU_SHAPES[:8], ["flash", "math", NAIVE]))
    for key, fig in figures.items():
        assert "not shown" not in texts(fig), key
