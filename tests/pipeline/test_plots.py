"""The report's figures, drawn (Agg) and read back: limits hold every point, no empty panels, integer
count ticks, legends clear of the bars, and the numbers on the new figures are the results' numbers."""

from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Polygon, Rectangle

from darkmatter.analysis.directions import ICA, NULL
from darkmatter.pipeline import table
from darkmatter.pipeline.report import aggregate, plots
from darkmatter.pipeline.results import SAEInfo
from darkmatter.pipeline.results.document import LayerRow, LayersSummary


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _inside(ax, x: np.ndarray, y: np.ndarray) -> bool:
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    return bool(np.all((x > x0) & (x < x1) & (y > y0) & (y < y1)))


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or any(isinstance(p, Rectangle) and p.get_height() for p in ax.patches))


def _integer_ticks(ax) -> bool:
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    return len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_kurtosis_vs_sae_limits_hold_every_point_on_their_symlog_and_log_scales():
    rng = np.random.default_rng(1)
    ica, control = np.array([1.2, 2.5, 30.0, 1800.0]), rng.normal(8, 3, 25)
    freq = np.geomspace(1e-3, 0.45, 300)  # past p = 0.21, where (1 − 6pq)/(pq) turns negative
    sae = 1 / freq * rng.uniform(1, 6, 300)
    sae[0] = 3e4  # one far outlier at the top
    active = rng.normal(0.5, 2, 300)
    active[3] = -1.6
    fig = plots.kurtosis_vs_sae(ica, control, sae, active, freq, 28.0, "t")
    left, right = fig.axes
    assert (left.get_xscale(), right.get_xscale(), right.get_yscale()) == ("symlog", "log", "symlog")
    assert plots.kurtosis_vs_sae(ica, None, sae[:50], active[:50], freq[:50], None, "t").axes[1].get_yscale() == "log"
    x, y = right.collections[0].get_offsets().T
    assert len(x) == 300 and _inside(right, np.asarray(x), np.asarray(y))
    curve = right.lines[0].get_xydata()
    assert curve[:, 1].min() < 0 and _inside(right, curve[:, 0], curve[:, 1])  # the whole curve, negative end too
    values = np.concatenate([ica, control, active])
    x0, x1 = left.get_xlim()
    assert x0 < values.min() and values.max() < x1 and x0 < 28.0 < x1
    bars = [p for p in left.patches if isinstance(p, Polygon)]
    tops = np.concatenate([p.get_xy()[p.get_xy()[:, 1] > 0, 0] for p in bars])  # edges of bins holding values
    assert len(tops) and x0 <= tops.min() and tops.max() <= x1  # every such bin shown whole


def _similarity(n_others: int):
    rng = np.random.default_rng(0)
    k = 25
    raw, proj = rng.uniform(0.25, 0.6, k), rng.uniform(0.55, 0.85, k)
    null_raw, null_proj = rng.uniform(0.25, 0.5, k * 20), rng.uniform(0.55, 0.8, k * 20)
    stable, cand = np.arange(k) < 3, np.arange(k) == 0
    others = {f"baseline {i}": rng.uniform(0.1, 0.7, k) for i in range(n_others)}
    return plots.similarity_vs_null(raw, proj, null_raw, null_proj, stable, cand, others, "t", (0.3, 0.8))


@pytest.mark.parametrize("n_others", [0, 1, 2, 3])
def test_similarity_figure_lays_out_only_panels_with_data_and_integer_counts(n_others):
    fig = _similarity(n_others)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 2 + n_others and all(_has_data(ax) for ax in shown)  # no empty cells
    assert all(_integer_ticks(ax) for ax in shown)
    hidden = [ax for ax in fig.axes if not ax.axison]
    assert len(hidden) == 1 and hidden[0].get_legend() is not None  # only the strip holding the legend


def test_similarity_legend_covers_no_bar_and_names_every_class():
    fig = _similarity(2)
    fig.canvas.draw()
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    box = legend.get_window_extent()
    labels = [t.get_text() for t in legend.get_texts()]
    assert any("candidate" in t for t in labels) and any("matched null" in t for t in labels)
    assert sum("marks at" in t for t in labels) == 1  # the two marks share one entry
    for ax in fig.axes[:2]:
        assert not ax.get_legend()  # the histogram panels carry no legend of their own
        for bar in ax.patches:
            if isinstance(bar, Rectangle) and bar.get_height() > 0:
                assert not box.overlaps(bar.get_window_extent())
        assert not box.overlaps(ax.get_window_extent())  # nor any part of their data area


def test_sae_label_names_the_sae_not_a_run_folder():
    info = SAEInfo(source="out/sae", sae_class="TopKSAE", d_sae=4608, d_in=576, W_dec_shape=[4608, 576],
                   W_dec_transposed=False, hook_name=None, made_by="trained here (topk)")
    assert plots.sae_label(info) == "SAE trained here (topk): TopKSAE, d_sae 4,608"
    pre = replace(info, source="gpt2-small-res-jb/blocks.8.hook_resid_pre", sae_class="StandardSAE", d_sae=24576,
                  made_by="pretrained")
    assert plots.sae_label(pre) == "SAE gpt2-small-res-jb/blocks.8.hook_resid_pre (StandardSAE, d_sae 24,576)"


def test_residual_kurtosis_bands_differ_and_the_legend_names_each():
    rng = np.random.default_rng(2)
    fig = plots.residual_kurtosis(rng.normal(1, 0.5, 64), rng.normal(0.5, 0.5, 64), 0.012, "t", noise_floor=0.033)
    left, right = fig.axes
    for ax in (left, right):
        hatched = [p for p in ax.patches if p.get_label().startswith("±2 s.e.")]
        filled = [p for p in ax.patches if p.get_label().startswith("Gaussian surrogate")]
        assert len(hatched) == 1 and len(filled) == 1
        assert hatched[0].get_hatch() and not filled[0].get_hatch()  # hatching against a fill
        assert hatched[0].get_facecolor()[3] == 0 and filled[0].get_facecolor()[3] > 0
        assert hatched[0].get_edgecolor()[:3] != filled[0].get_facecolor()[:3]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("Gaussian surrogate's range") and "±0.033" in t for t in labels)
    assert any(t.startswith("±2 s.e.") and "±0.024" in t for t in labels)
    y = np.concatenate([line.get_ydata() for line in right.lines[:2]])
    assert _inside(right, np.zeros_like(y) + 1, y)


@pytest.fixture(scope="module")
def causal(small_planted_run):
    from darkmatter.pipeline.results import CausalResult
    from darkmatter.pipeline.storage.store import OutputStore

    return OutputStore(small_planted_run).read_result("causal.json", CausalResult, ("schema_version", "run_id"))[0]


def test_step_06_writes_the_top_m_figure_and_the_report_lists_it(small_planted_run):
    assert (small_planted_run / "causal_topm.png").exists()
    assert "causal_topm.png" in aggregate.PLOTS
    assert table.producer_step("causal_topm.png").module == "darkmatter.pipeline.steps.s06_interpret"


def test_top_m_figure_has_every_number_of_causal_json_with_its_error_bar(causal):
    t = causal.table
    assert t.top_m and t.baseline_draws[NULL] > 1
    fig = plots.causal_topm(t, "t")
    ax = fig.axes[0]
    bars = {c.get_label().split(":")[0]: c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    names = list(t.top_m[0].baselines)
    assert set(bars) == {ICA, *names}
    for name, container in bars.items():
        gaps = [r.ica if name == ICA else r.baselines[name].gap for r in t.top_m]
        line, _, (segments,) = container.lines
        np.testing.assert_allclose(line.get_ydata(), [g.share * 100 for g in gaps])
        assert isinstance(segments, LineCollection)
        lows, highs = np.array([[s[0][1], s[1][1]] for s in segments.get_segments()]).T
        np.testing.assert_allclose((highs - lows) / 2, [g.se * 100 for g in gaps])
        assert np.all(np.abs(np.log(line.get_xdata() / [r.m for r in t.top_m])) < 0.1)  # side by side at m
    band = [c for c in ax.collections if isinstance(c, PolyCollection) and NULL in c.get_label()]
    assert len(band) == 1 and f"{t.baseline_draws[NULL]} draws" in band[0].get_label()
    ys = band[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(ys.min(), min(r.baselines[NULL].low for r in t.top_m) * 100)
    assert np.isclose(ys.max(), max(r.baselines[NULL].high for r in t.top_m) * 100)
    assert [int(x) for x in ax.get_xticks()] == [r.m for r in t.top_m]
    legend = " ".join(text.get_text() for text in fig.legends[0].get_texts())
    assert "random rotations" in legend and f"95% range of its {t.baseline_draws[NULL]} draws" in legend
    with pytest.raises(ValueError, match="top-m"):
        plots.causal_topm(replace(t, top_m=[]), "t")


def _layer(layer: int, **kw) -> LayerRow:
    return LayerRow(**{**dict(layer=layer, hook_name=f"blocks.{layer}.hook_resid_pre", outputs=f"layer_{layer:02d}",
                              sae_fvu=0.2 + layer / 100, sae_l0=32.0, sae_dead_fraction=0.0,
                              residual_median_excess_kurtosis=1.0, pca_components_for_90=300, k=25, n_stable=layer % 5,
                              control_n_stable=0, n_stable_above_noise_floor=1, ica_median_excess_kurtosis=1.7,
                              mean_max_abs_cos_to_sae={ICA: 0.37, NULL: 0.35, "PCA": 0.36},
                              n_candidate_dark_matter=layer % 3), **kw})


@pytest.mark.parametrize("layers", [[0, 6, 11], [4]])
def test_layers_figure_has_one_tick_per_layer_and_no_empty_panel(layers):
    summary = LayersSummary(layers=[_layer(L) for L in reversed(layers)])  # plotted in layer order
    fig = plots.layers_summary(summary)
    assert len(fig.axes) == 6 and all(_has_data(ax) for ax in fig.axes)
    for ax in fig.axes:
        assert [int(x) for x in ax.get_xticks()] == layers
        for line in ax.lines:
            x, y = line.get_xdata(), line.get_ydata()
            if len(x) == len(layers) and np.isfinite(y).all():
                assert _inside(ax, np.asarray(x, float), np.asarray(y, float)), ax.get_title()
    counts = next(ax for ax in fig.axes if ax.get_title() == "ICA components")
    assert _integer_ticks(counts)
    stable = next(line for line in counts.lines if line.get_label() == "stable")
    assert list(stable.get_ydata()) == [L % 5 for L in layers]
    assert "blocks.L.hook_resid_pre" in fig.get_suptitle()


def test_top_m_figure_says_why_it_has_no_points(causal):
    """A run whose SAE leaves no gap (spliced loss not above the clean one) has undefined shares: the figure
    says so instead of showing blank axes."""
    def blank(g):
        return replace(g, share=float("nan"), se=float("nan"))

    rows = [replace(r, ica=blank(r.ica), baselines={n: replace(b, gap=blank(b.gap)) for n, b in r.baselines.items()})
            for r in causal.table.top_m]
    ax = plots.causal_topm(replace(causal.table, top_m=rows), "t").axes[0]
    assert any(t.get_text().startswith("no share of the gap is defined") for t in ax.texts)
    assert not plots.causal_topm(causal.table, "t").axes[0].texts
