"""Markdown pages: report.md, components.md and layers_summary.md, rendered from typed results.

Each page is a jinja2 template in ``darkmatter/pipeline/report/templates`` (``*.md.j2``, the folder
the dashboard's templates are in) holding the sections and their prose; this module gives it the
tables (:func:`~darkmatter.pipeline.report.mdtable.table`, one function per table) and the filters
``esc`` and ``code`` (:mod:`~darkmatter.pipeline.report.mdtable`: text from data never renders as
markdown or HTML), ``fmt`` (``format(value, spec)``) and ``num`` (the same, ``n/a`` for None).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from darkmatter.analysis.compare import HIGH, LOW
from darkmatter.analysis.directions import NULL
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.analysis.linear_split import LinearSplit
from darkmatter.pipeline.report import statistics
from darkmatter.pipeline.report.causal_table import causal_markdown
from darkmatter.pipeline.report.completeness_table import completeness_markdown
from darkmatter.pipeline.report.dashboard import TEMPLATES
from darkmatter.pipeline.report.mdtable import code, esc, table, token
from darkmatter.pipeline.report.verdict import label_and_text
from darkmatter.pipeline.results import CollectResult, FeatureBank, ICAResult, SimilarityResult
from darkmatter.pipeline.results.document import ArrayInfo, ComponentRow, LayersSummary, Results, StepRecord

if TYPE_CHECKING:
    import jinja2

#: report.md lists the first this many components (all of them are in components.md).
COMPONENTS_SHOWN = 40


def _num(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _counts(counts: Mapping[str, int]) -> str:
    """``{"linear": 3, "both": 1}`` as "3 linear, 1 both"."""
    return ", ".join(f"{n} {c}" for c, n in counts.items())


@functools.cache
def _environment() -> jinja2.Environment:
    """The markdown pages' jinja2 environment: the dashboard's loader and block trimming, no HTML
    autoescaping (markdown escapes through ``esc``/``code``), the file's last newline kept."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(esc=esc, code=code, fmt=format, num=_num, counts=_counts)
    env.globals.update(
        LOW=LOW, HIGH=HIGH, completeness_markdown=completeness_markdown, causal_markdown=causal_markdown,
        sae_table=_sae_table, k_sweep_table=_k_sweep_table, direction_sets_table=_direction_sets_table,
        matched_null_table=_matched_null_table, seeds_table=_seeds_table, noise_floor_table=_noise_floor_table,
        components_table=_components_table, bands_table=_bands_table, groundtruth_table=_groundtruth_table,
        steps_table=_steps_table, arrays_table=_arrays_table, bank_table=_bank_table, layers_table=_layers_table,
        statistics_table=_statistics_table, label_and_text=label_and_text)
    return env


def _statistics_table(r: Results) -> str:
    """The registered key statistics (:mod:`darkmatter.pipeline.report.statistics`) beside their nulls."""
    return table(["statistic", "this run", "null", "which null"],
                 [[esc(row.label), esc(row.value), esc(row.null), esc(row.null_name)] for row in statistics.rows(r)])


def report_markdown(r: Results) -> str:
    """report.md: headline, verdict, SAE, similarity per direction set, ICA, noise floor, ground truth,
    plots, the step table with timings, and every array."""
    kind = r.setup.source_kind
    source_name = r.config["source"]["model"] if kind == "model" else f"{kind} activations"
    return _environment().get_template("report.md.j2").render(r=r, source_name=source_name,
                                                              components_shown=COMPONENTS_SHOWN)


def components_markdown(bank: FeatureBank) -> str:
    """components.md: a short index of the feature bank, one line per component (the detail is in
    feature_bank.json and the dashboard, outputs/dashboard/index.html)."""
    return _environment().get_template("components.md.j2").render(bank=bank)


def layers_markdown(summary: LayersSummary) -> str:
    """layers_summary.md: the per-layer table."""
    return _environment().get_template("layers_summary.md.j2").render(summary=summary)


# report.md's tables, in the order of its sections.

def _sae_table(ex: CollectResult) -> str:
    m, with_ex = ex.metrics, ex.metrics_with_excluded
    return table(["FVU", "FVU with excluded tokens", "MSE", "mean L0", "dead fraction", "mean cos(x, x̂)",
                  "BOS excluded", "massive excluded"],
                 [[f"{m.fvu:.4f}", _num(with_ex.fvu if with_ex else None, ".4f"), f"{m.mse:.4g}", f"{m.mean_l0:.1f}",
                   f"{m.dead_fraction:.2%}", f"{m.mean_cos_x_xhat:.3f}", f"{ex.bos_positions_excluded:,}",
                   f"{ex.massive_tokens_excluded:,}"]])


def _k_sweep_table(ica: ICAResult) -> str:
    return table(["k", "residual variance kept", "settled", "stable", "undetermined", "above noise floor", "all three",
                  "control max excess kurtosis", "control stable", "design effect", "n_eff", "allows k ≤",
                  "seconds (fit + control)"],
                 [[f"**{x.k}**" if x.k == ica.k else x.k, f"{x.variance_kept:.1%}", x.n_settled, x.n_stable,
                   x.n_undetermined, x.n_above_floor, x.n_reproducible, _num(x.control_max_kurtosis, ".3f"),
                   _num(x.control_n_stable, "d"), f"{x.design_effect:.2f}", f"{x.effective_tokens:,.0f}",
                   f"{x.k_bound}" + ("" if x.admissible else " (k not admissible)"),
                   f"{x.seconds_fit:.0f} + {x.seconds_control:.0f}"] for x in ica.k_sweep])


def _direction_sets_table(r: Results) -> str:
    """Every direction set's max |cos| to the decoder rows, then ICA's stable, settled components alone."""
    sim = r.similarity
    rows: list[list[Any]] = [[name + (" (one draw)" if name == NULL else ""), f"{v.mean_max_abs_cos:.3f}",
                              f"{sim.sets_projected[name].mean_max_abs_cos:.3f}",
                              v.above_high, v.between, v.below_low, sim.sets_projected[name].below_low]
                             for name, v in sim.sets.items()]
    stable = [c for c in r.components if c.settled and c.stability >= r.ica.stable_threshold]
    if stable:
        raw = [c.max_abs_cos_to_sae for c in stable]
        proj = [c.max_abs_cos_to_sae_projected for c in stable]
        rows.append([f"ICA, stable only ({len(raw)})", f"{sum(raw) / len(raw):.3f}", f"{sum(proj) / len(proj):.3f}",
                     sum(v > HIGH for v in raw), sum(LOW <= v <= HIGH for v in raw), sum(v < LOW for v in raw),
                     sum(v < LOW for v in proj)])
    return table(["directions", "mean max abs cos (raw)", "mean (projected)", f"> {HIGH}", f"{LOW}–{HIGH}",
                  f"< {LOW}", f"< {LOW} (projected)"], rows)


def _matched_null_table(sim: SimilarityResult) -> str:
    return table(["against the matched null", "null mean", "null 1st pct", "null 99th pct", "ICA above null 99th pct",
                  "ICA below null 1st pct", f"null directions < {LOW}"],
                 [[sense, f"{a.null_mean:.3f}", f"{a.null_p01:.3f}", f"{a.null_p99:.3f}", f"{a.share_above_p99:.0%}",
                   f"{a.share_below_p01:.0%}", f"{a.null_below_low:.0%}"]
                  for sense, a in (("raw decoder rows", sim.against_null),
                                   ("projected decoder rows", sim.against_null_projected))])


def _seeds_table(ica: ICAResult) -> str:
    return table(["seed", "tokens", "iterations", "converged", "stopped on stability (settled)", "settled converged",
                  "final change"],
                 [[s.seed, f"{s.n_tokens:,}", s.n_iter, s.converged, f"{s.stopped_on_stability} "
                   f"({_num(s.n_settled, 'd')})", _num(s.settled_converged, ""), _num(s.final_change, ".1e")]
                  for s in ica.seeds])


def _noise_floor_table(r: Results) -> str:
    nf, ica = r.noise_floor, r.ica
    assert nf is not None
    kurtosis = sorted(c.source_excess_kurtosis for c in ica.components)
    return table(["", "stable", "settled", "max abs source excess kurtosis", "median source excess kurtosis"],
                 [["matched control", nf.control_n_stable, _num(nf.control_n_settled, "d"),
                   f"{nf.control_max_abs_source_excess_kurtosis:.3f}",
                   f"{nf.control_median_source_excess_kurtosis:.3f}"],
                  ["residual", ica.n_stable, ica.n_settled, f"{max(abs(k) for k in kurtosis):.3f}",
                   f"{kurtosis[ica.k // 2]:.3f}"]])


def _components_table(components: list[ComponentRow]) -> str:
    return table(["#", "excess kurtosis", "stability", "settled", "above floor", "max cos raw", "max cos projected",
                  "candidate (or why not)", "labels", "top tokens"],
                 [[c.component, f"{c.excess_kurtosis:.2f}", f"{c.stability:.2f} ({c.stability_status})",
                   "yes" if c.settled else "**unsettled**", "yes" if c.above_floor else "no",
                   f"{c.max_abs_cos_to_sae:.3f}", f"{c.max_abs_cos_to_sae_projected:.3f}",
                   "**yes**" if c.candidate else ", ".join(c.not_candidate_because), esc(", ".join(c.labels)),
                   ", ".join(token(t) for t in c.top_tokens[:3])] for c in components[:COMPONENTS_SHOWN]])


def _bands_table(sp: LinearSplit) -> str:
    return table(["principal components", "share of residual variance", "share linearly predicted"],
                 [[b, f"{v:.1%}", f"{p:.1%}"]
                  for b, v, p in zip(sp.bands, sp.band_variance_share, sp.band_variance_predicted)])


def _groundtruth_table(g: GroundTruthScores) -> str:
    return table(["directions", "mean max abs cos", f"found (> {g.found_cos})",
                  f"false discoveries (< {g.false_discovery_cos} to every true feature)"],
                 [[n, f"{s.mean_max_abs_cos:.3f}", f"{s.n_found}/{s.n_dark}",
                   f"{s.n_false_discoveries}/{s.n_directions}"] for n, s in g.sets.items()])


def _steps_table(steps: list[StepRecord]) -> str:
    """Every step with its outputs and timing, and a total row when any step was timed."""
    rows: list[list[Any]] = [[s.script, s.summary, ", ".join(f"`{o}`" for o in s.outputs) or "—",
                              _num(s.timing.seconds if s.timing else None, ".1f"),
                              _num(s.timing.peak_rss_mb if s.timing else None, ".0f")] for s in steps]
    timed = [s.timing for s in steps if s.timing]
    if timed:
        rows.append(["**total**", "", "", f"{sum(t.seconds for t in timed):.1f}",
                     f"{max(t.peak_rss_mb for t in timed):.0f} (max)"])
    return table(["step", "does", "outputs", "seconds", "peak RAM (MiB)"], rows)


def _arrays_table(arrays: dict[str, ArrayInfo]) -> str:
    return table(["file", "shape", "dtype"],
                 [[f"`{k}`", " × ".join(str(x) for x in v.shape), v.dtype] for k, v in arrays.items()])


# components.md's and layers_summary.md's tables.

def _bank_table(bank: FeatureBank) -> str:
    """One row per component; the add-back column only when the bank has causal figures."""
    causal = bank.loss_name is not None
    head = ["component", "candidate", "excess kurtosis", "stability", "novelty (1 − max |cos|)", "linear share"]
    head += ["gap closed (add back; its matched null)"] if causal else []
    head += ["nearest SAE feature (cos)", "frequent top tokens", "top context"]
    rows = []
    for c in bank.components:
        row = [c.component, "yes" if c.candidate else "no: " + ", ".join(c.not_candidate_because),
               f"{c.source_excess_kurtosis:.2f}", f"{c.stability:.2f}", f"{c.novelty:.2f}",
               _num(c.linear_share, ".0%")]
        if causal:
            e = c.causal
            row.append("–" if e is None or e.add_back is None else
                       f"{e.add_back.share:+.1%} (null {e.null_add_back.share:+.1%})" if e.null_add_back else
                       f"{e.add_back.share:+.1%}")
        near = c.nearest_sae_features[0] if c.nearest_sae_features else None
        near_text = "–" if near is None else (
            f"[{esc(near.neuronpedia)}](https://www.neuronpedia.org/{quote(near.neuronpedia)}) ({near.cos:+.2f})"
            if near.neuronpedia else f"{near.feature} ({near.cos:+.2f})")
        toks = ", ".join(token(t) for t, _ in c.token_histogram[:4])
        ctx = c.top[0].context[:80] if c.top else ""
        rows.append(row + [near_text, toks, code(ctx) if ctx else ""])
    return table(head, rows)


def _layers_table(summary: LayersSummary) -> str:
    names = list(summary.layers[0].mean_max_abs_cos_to_sae) if summary.layers else []
    head = ["layer", "hook", "SAE FVU", "L0", "dead", "resid. median excess kurt.", "PCA 90%", "k", "stable",
            "stable in matched control", "stable above noise floor",
            " / ".join(names) + " max abs cos to SAE", "candidate dark matter", "detection limit"]
    rows = [[r.layer, code(r.hook_name), f"{r.sae_fvu:.4f}", f"{r.sae_l0:.1f}", f"{r.sae_dead_fraction:.1%}",
             f"{r.residual_median_excess_kurtosis:.2f}", r.pca_components_for_90, r.k, r.n_stable,
             _num(r.control_n_stable, "d"), _num(r.n_stable_above_noise_floor, "d"),
             " / ".join(f"{r.mean_max_abs_cos_to_sae[n]:.3f}" for n in names), r.n_candidate_dark_matter,
             r.detection_limit or "not measured"]
            for r in summary.layers]
    return table(head, rows)
