"""Markdown pages: report.md, components.md and layers_summary.md, rendered from typed results."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from darkmatter.analysis.compare import HIGH, LOW
from darkmatter.pipeline.report.causal_table import causal_markdown
from darkmatter.pipeline.report.completeness_table import completeness_markdown
from darkmatter.pipeline.report.mdtable import code, esc, table
from darkmatter.pipeline.results import FeatureBank
from darkmatter.pipeline.results.document import LayersSummary, Results


def _num(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def report_markdown(r: Results) -> str:
    """report.md: headline, verdict, SAE, similarity per direction set, ICA, noise floor, ground truth,
    plots, the step table with timings, and every array."""
    cfg, m, ica = r.config, r.sae_stats.metrics, r.ica
    name = cfg["source"]["model"] if r.setup.source_kind == "model" else f"{r.setup.source_kind} activations"
    out = [f"# ICA dark matter report: {esc(name)} {code(r.setup.hook.hook_name)}", "",
           f"Source: {esc(r.setup.description)}.", "",
           f"Preset {code(cfg['source']['preset'])}; SAE {code(r.setup.sae.source)} (d_sae {m.d_sae:,}); "
           f"{r.diagnostics.n_tokens:,} tokens. Built {r.generated} on {esc(r.machine)}.", "",
           "## Headline", ""] + [f"- {esc(line)}" for line in r.headline]
    ex = r.sae_stats
    with_ex = ex.metrics_with_excluded
    out += ["", "## How to read this report", "",
            f"- **stable**: the component's mixing direction reappears (matched |cos| ≥ {ica.stable_threshold}) in "
            f"≥ {ica.stable_frequency:.0%} of the FastICA restarts that can tell; the restarts fit both halves of "
            f"{ica.stability_splits} random splits of the {ica.resampling_unit}s. Its *stability* is that "
            "reappearance frequency; *undetermined* means fewer than half the restarts could tell (their matching "
            "row never settled)."
            + ("" if ica.resampling_unit == "document" else
               f" The source gives no document ids, so restarts and standard errors resample {ica.resampling_unit}s."),
            "- **settled**: the engine's row for it stopped moving; unsettled rows are arbitrary completions and are "
            "left out of every similarity mean.",
            f"- **above the noise floor**: the source's excess kurtosis exceeds {ica.noise_floor}.",
            f"- **{LOW} / {HIGH}**: max |cos| to any SAE decoder row below {LOW} is far from the SAE (novel), above "
            f"{HIGH} is a feature the SAE has.",
            "- **matched null**: random rotations in the same whitened subspace, through the same dewhitener, same k "
            f"({r.similarity.null_draws} draws): what chance gives there.",
            f"- **candidate**: {r.similarity.candidate_rule}. Concentration of a component's strongest tokens on one "
            "token or one document is shown as a label, not an exclusion.",
            "- **detection limit**" + (r.detection_limit.removeprefix("detection limit") if r.detection_limit
                                       else ": not measured") + ".", "",
            "## Verdict", "", esc(r.verdict), "",
            f"Effect sizes first: the residual's per-dimension excess kurtosis has median "
            f"{r.diagnostics.residual_excess_kurtosis.median:.2f} (activations "
            f"{r.diagnostics.activation_excess_kurtosis.median:.2f}), against ±"
            f"{2 * r.diagnostics.kurtosis_standard_error_effective:.3f} for a Gaussian at the effective sample size "
            f"({r.diagnostics.effective_tokens:,.0f} tokens, design effect {r.diagnostics.design_effect:.2f})."
            "[^dagostino]",
            "", f"[^dagostino]: {_dagostino(r)}", "", "## SAE", "",
            table(["FVU", "FVU with excluded tokens", "MSE", "mean L0", "dead fraction", "mean cos(x, x̂)",
                   "BOS excluded", "massive excluded"],
                  [[f"{m.fvu:.4f}", _num(with_ex.fvu if with_ex else None, ".4f"), f"{m.mse:.4g}",
                    f"{m.mean_l0:.1f}", f"{m.dead_fraction:.2%}", f"{m.mean_cos_x_xhat:.3f}",
                    f"{ex.bos_positions_excluded:,}", f"{ex.massive_tokens_excluded:,}"]])]
    out += ["", "## The k sweep", "",
            f"FastICA estimates k² unmixing entries and needs about {ica.samples_per_parameter:g} independent tokens "
            f"per entry (Onton & Makeig 2006): raw n allows k ≤ {ica.max_supported_k} on {ica.n_fit_tokens:,} tokens, "
            "but "
            "tokens of one document are dependent, so the rule is applied at the effective sample size of the "
            f"half-fits stability rests on: n_eff = {ica.restart_resample:g} · n / the design effect of source "
            "kurtosis measured at each k. Chosen: k = "
            f"{ica.k} ({ica.k_rule})."
            + (f" Not fitted: k = {', '.join(map(str, ica.k_skipped))} (the effective sample size at the k before "
               "could not support them)." if ica.k_skipped else ""), "",
            table(["k", "residual variance kept", "settled", "stable", "undetermined", "above noise floor", "all three",
                   "control max excess kurtosis", "control stable", "design effect", "n_eff", "allows k ≤",
                   "seconds (fit + control)"],
                  [[("**" + str(x.k) + "**") if x.k == ica.k else x.k, f"{x.variance_kept:.1%}", x.n_settled,
                    x.n_stable, x.n_undetermined, x.n_above_floor, x.n_reproducible,
                    _num(x.control_max_kurtosis, ".3f"), _num(x.control_n_stable, "d"), f"{x.design_effect:.2f}",
                    f"{x.effective_tokens:,.0f}", f"{x.k_bound}" + ("" if x.admissible else " (k not admissible)"),
                    f"{x.seconds_fit:.0f} + {x.seconds_control:.0f}"] for x in ica.k_sweep])]
    sim = r.similarity
    an, anp = sim.against_null, sim.against_null_projected
    out += ["", "## Direction sets against the SAE dictionary", "",
            f"Max |cos| to the raw decoder rows, and to the rows projected into the whitened {sim.k}-subspace (a "
            f"decoder row keeps a median {sim.decoder_share_in_subspace.median:.0%} of its norm there, which caps "
            "the raw figure of any direction inside it)."
            + (f" ICA figures leave out {sim.n_unsettled_excluded} unsettled components." if sim.n_unsettled_excluded
               else ""), "",
            table(["directions", "mean max abs cos (raw)", "mean (projected)", f"> {HIGH}", f"{LOW}–{HIGH}",
                   f"< {LOW}", f"< {LOW} (projected)"],
                  [[name, f"{v.mean_max_abs_cos:.3f}", f"{sim.sets_projected[name].mean_max_abs_cos:.3f}",
                    v.above_high, v.between, v.below_low, sim.sets_projected[name].below_low]
                   for name, v in sim.sets.items()] + _stable_row(r)), "",
            table(["against the matched null", "null mean", "null 1st pct", "null 99th pct",
                   "ICA above null 99th pct", "ICA below null 1st pct", f"null directions < {LOW}"],
                  [[sense, f"{a.null_mean:.3f}", f"{a.null_p01:.3f}", f"{a.null_p99:.3f}", f"{a.share_above_p99:.0%}",
                    f"{a.share_below_p01:.0%}", f"{a.null_below_low:.0%}"]
                   for sense, a in (("raw decoder rows", an), ("projected decoder rows", anp))]), ""]
    out += [f"- **{name}**: {text}" for name, text in sim.descriptions.items()]
    out += ["", "## ICA", "",
            f"k = {ica.k}; the k-component reconstruction explains {ica.reconstruction_variance_explained:.4f} of the "
            f"residual variance (PCA kept {ica.pca_variance_kept:.4f}).",
            "", table(["seed", "tokens", "iterations", "converged", "stopped on stability (settled)",
                       "settled converged", "final change"],
                      [[s.seed, f"{s.n_tokens:,}", s.n_iter, s.converged,
                        f"{s.stopped_on_stability} ({_num(s.n_settled, 'd')})", _num(s.settled_converged, ''),
                        _num(s.final_change, '.1e')] for s in ica.seeds]), "",
            f"{ica.n_stable}/{ica.k} stable ({ica.n_undetermined} undetermined), {ica.n_settled} settled, "
            f"{ica.n_above_floor} above the noise floor, {ica.n_reproducible} all three; "
            f"{len(r.candidate_dark_matter_components)} candidates "
            f"({r.detection_limit or 'detection limit not measured'}).",
            ""]
    if r.noise_floor is not None:
        nf = r.noise_floor
        out += ["## Noise floor", "", f"Null: {nf.null}.", "",
                table(["", "stable", "settled", "max abs source excess kurtosis", "median source excess kurtosis"],
                      [["matched control", nf.control_n_stable, _num(nf.control_n_settled, "d"),
                        f"{nf.control_max_abs_source_excess_kurtosis:.3f}",
                        f"{nf.control_median_source_excess_kurtosis:.3f}"],
                       ["residual", ica.n_stable, ica.n_settled,
                        f"{max(abs(c.source_excess_kurtosis) for c in ica.components):.3f}",
                        f"{sorted(c.source_excess_kurtosis for c in ica.components)[ica.k // 2]:.3f}"]]),
                "", f"Effective sample size {nf.effective_tokens:,.0f} of {ica.n_fit_tokens:,} tokens (design effect "
                f"{nf.design_effect:.2f}: tokens of one {ica.resampling_unit} are dependent).", ""]
    out += (["## Detection limit (injection–recovery)", "", completeness_markdown(r.completeness)]
            if r.completeness is not None else
            ["## Detection limit", "", "Not measured (`--completeness-runs 0`): a count of candidates says nothing "
             "about what the run could have found.", ""])
    if r.amplitude is not None:
        a = r.amplitude
        out += ["## Amplitude error", "",
                f"On {a.n_rows:,} tokens (mean L0 {a.mean_active:.1f}): {a.share_in_active_span:.1%} of the residual's "
                f"energy lies in the span of the decoder rows of the latents that fired (null: "
                f"{a.share_in_null_span:.1%} in {a.null}). Refitting the active latents' amplitudes by least squares "
                f"lowers FVU from {a.fvu:.4f} to {a.fvu_refit:.4f}: {a.amplitude_share:.1%} of the residual is "
                "amplitude error (shrinkage or overshoot of latents that fired), the rest is in directions no active "
                "latent "
                f"writes. {a.share_shrunk:.0%} of active latents wrote too little along their own direction (median "
                f"relative error {a.relative_error_median:+.3f}).", ""]
    rows = [[c.component, f"{c.excess_kurtosis:.2f}", f"{c.stability:.2f} ({c.stability_status})",
             "yes" if c.settled else "**unsettled**", "yes" if c.above_floor else "no", f"{c.max_abs_cos_to_sae:.3f}",
             f"{c.max_abs_cos_to_sae_projected:.3f}", "**yes**" if c.candidate else ", ".join(c.not_candidate_because),
             esc(", ".join(c.labels)), ", ".join(code(t) for t in c.top_tokens[:3])]
            for c in r.components[:40]]
    out += ["## Components", "", "The first 40 by excess kurtosis; all of them in [components.md](components.md), "
            "`feature_bank.json` and the dashboard ([dashboard/index.html](dashboard/index.html)).", "",
            table(["#", "excess kurtosis", "stability", "settled", "above floor", "max cos raw", "max cos projected",
                   "candidate (or why not)", "labels", "top tokens"], rows), ""]
    if r.linear_split is not None:
        ls = r.linear_split
        sp = ls.split
        out += ["## The linear part (Engels et al. 2024)", "",
                f"A least-squares map with bias from x to the residual, fitted on half the {ls.unit}s "
                f"({sp.n_train:,} tokens) and scored on the other half ({sp.n_test:,}), predicts "
                f"{sp.variance_predicted:.1%} of the residual's variance and R² {sp.norm_predicted:.2f} of its "
                "norm.", "",
                table(["principal components", "share of residual variance", "share linearly predicted"],
                      [[b, f"{v:.1%}", f"{p:.1%}"] for b, v, p in zip(sp.bands, sp.band_variance_share,
                                                                       sp.band_variance_predicted)]), "",
                f"ICA of the nonlinear part (k = {ls.nonlinear_k}, same seeds and restarts): {ls.nonlinear_n_stable} "
                "stable. "
                "Each residual component lives in the linear part (≥ 50% of its source's variance predicted, gone from "
                "the nonlinear part), the nonlinear part (|cos| ≥ 0.9 to one of its components), both, or neither: "
                + ", ".join(f"{n} {c}" for c, n in ls.counts.items()) + ".", ""]
    if r.causal is not None:
        out += ["## Causal tests: does the model use the residual?", "", causal_markdown(r.causal, r.ica.k)]
    g = r.groundtruth
    if g is not None:
        out += ["## Ground truth (planted)", "", f"{len(g.dark_features)} dark features ({g.dark_rule}).", "",
                table(["directions", "mean max abs cos", f"found (> {g.found_cos})",
                       f"false discoveries (< {g.false_discovery_cos} to every true feature)"],
                      [[n, f"{s.mean_max_abs_cos:.3f}", f"{s.n_found}/{s.n_dark}",
                        f"{s.n_false_discoveries}/{s.n_directions}"] for n, s in g.sets.items()]), ""]
    out += ["## Plots", ""] + [f"![{p}]({p})" for p in r.plots]
    timed = [s.timing for s in r.steps if s.timing]
    rows = [[s.script, s.summary, ", ".join(f"`{o}`" for o in s.outputs) or "—",
             _num(s.timing.seconds if s.timing else None, ".1f"),
             _num(s.timing.peak_rss_mb if s.timing else None, ".0f")]
            for s in r.steps]
    if timed:
        rows.append(["**total**", "", "", f"{sum(t.seconds for t in timed):.1f}",
                     f"{max(t.peak_rss_mb for t in timed):.0f} (max)"])
    out += ["", "## Steps", "", table(["step", "does", "outputs", "seconds", "peak RAM (MiB)"], rows)]
    out += ["", "## Arrays", "",
            table(["file", "shape", "dtype"], [[f"`{k}`", " × ".join(str(x) for x in v.shape), v.dtype]
                                               for k, v in r.arrays.items()]), ""]
    return "\n".join(out)


def _stable_row(r: Results) -> list[list[Any]]:
    """The ICA row again over the stable, settled components only (empty when there are none)."""
    raw = [c.max_abs_cos_to_sae for c in r.components if c.settled and c.stability >= r.ica.stable_threshold]
    proj = [c.max_abs_cos_to_sae_projected for c in r.components
            if c.settled and c.stability >= r.ica.stable_threshold]
    if not raw:
        return []
    return [[f"ICA, stable only ({len(raw)})", f"{sum(raw) / len(raw):.3f}", f"{sum(proj) / len(proj):.3f}",
             sum(v > HIGH for v in raw), sum(LOW <= v <= HIGH for v in raw), sum(v < LOW for v in raw),
             sum(v < LOW for v in proj)]]


def _dagostino(r: Results) -> str:
    """The D'Agostino-Pearson test as a footnote: at these n it rejects any visible departure."""
    g, a = r.diagnostics.gaussianity_residual, r.diagnostics.gaussianity_activations
    return (f"{g.test} on {g.n_sample:,} random tokens rejects normality in {g.fraction_rejected:.0%} of residual "
            f"dimensions ({a.fraction_rejected:.0%} of activation dimensions) at α = {g.alpha}; at this n it rejects "
            "any visible departure, so it says little beyond the effect sizes.")


def components_markdown(bank: FeatureBank) -> str:
    """components.md: a short index of the feature bank, one line per component (the detail is in
    feature_bank.json and the dashboard, outputs/dashboard/index.html)."""
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
        toks = ", ".join(code(t) for t, _ in c.token_histogram[:4])
        ctx = c.top[0].context[:80] if c.top else ""
        rows.append(row + [near_text, toks, code(ctx) if ctx else ""])
    return "\n".join([f"# ICA components of the SAE residual: {esc(bank.description)} {code(bank.hook_name)}", "",
                      "Everything else about each component (histogram, top/bottom/quantile contexts one per "
                      "document, logit lens, nearest SAE features, causal figures) is in `feature_bank.json` and "
                      "on its page of `dashboard/index.html`." + (f" {esc(bank.note)}." if bank.note else ""), "",
                      table(head, rows), ""])


def layers_markdown(summary: LayersSummary) -> str:
    """layers_summary.md: the per-layer table."""
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
    return "\n".join(["# ICA dark matter across layers", "", table(head, rows), ""])
