"""Markdown pages: report.md, components.md and layers_summary.md, rendered from typed results."""

from __future__ import annotations

import re
from typing import Any

from darkmatter.analysis.compare import HIGH, LOW
from darkmatter.pipeline.document import LayersSummary, Results
from darkmatter.pipeline.results import InterpretationsResult, SetupResult


def _cell(x: Any) -> str:
    """A table cell: pipes inside it (|cos|) escaped unless they already are."""
    return re.sub(r"(?<!\\)\|", r"\\|", str(x))


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def report_markdown(r: Results) -> str:
    """report.md: headline, verdict, SAE, similarity per direction set, ICA, noise floor, ground truth,
    plots, the step table with timings, and every array."""
    cfg, m, ica = r.config, r.sae_stats.metrics, r.ica
    name = cfg["source"]["model"] if r.setup.source_kind == "model" else f"{r.setup.source_kind} activations"
    out = [f"# ICA dark matter report: {name} `{r.setup.hook.hook_name}`", "",
           f"Source: {r.setup.description}.", "",
           f"Preset `{cfg['source']['preset']}`; SAE {r.setup.sae.source} (d_sae {m.d_sae:,}); "
           f"{r.diagnostics.n_tokens:,} tokens. Built {r.generated} on {r.machine}.", "",
           "## Headline", ""] + [f"- {line}" for line in r.headline]
    out += ["", "## Verdict", "", r.verdict, "", "## SAE", "",
            table(["FVU", "MSE", "mean L0", "dead fraction", "mean cos(x, x̂)", "BOS excluded", "massive excluded"],
                  [[f"{m.fvu:.4f}", f"{m.mse:.4g}", f"{m.mean_l0:.1f}", f"{m.dead_fraction:.2%}",
                    f"{m.mean_cos_x_xhat:.3f}", f"{r.sae_stats.bos_positions_excluded:,}",
                    f"{r.sae_stats.massive_tokens_excluded:,}"]])]
    sim = r.similarity
    out += ["", "## Direction sets against the SAE dictionary", "",
            table(["directions", "mean max abs cos", f"> {HIGH}", f"{LOW}–{HIGH}", f"< {LOW}"],
                  [[name, f"{v.mean_max_abs_cos:.3f}", v.above_high, v.between, v.below_low]
                   for name, v in sim.sets.items()]), ""]
    out += [f"- **{name}**: {text}" for name, text in sim.descriptions.items()]
    st = r.statistics
    sae_kurt = st.sae_excess_kurtosis.summary
    out += ["", "## ICA", "",
            f"k = {ica.k} ({ica.k_rule}); the k-component reconstruction explains "
            f"{ica.reconstruction_variance_explained:.4f} of the residual variance "
            f"(PCA kept {ica.pca_variance_kept:.4f}).",
            "", table(["seed", "tokens", "iterations", "converged", "stopped on stability (settled)",
                       "settled converged", "final change"],
                      [[s.seed, f"{s.n_tokens:,}", s.n_iter, s.converged,
                        f"{s.stopped_on_stability} ({_num(s.n_settled, 'd')})", _num(s.settled_converged, ''),
                        _num(s.final_change, '.1e')] for s in ica.seeds]), "",
            f"{ica.n_stable}/{ica.k} components are stable (matched |cos| ≥ {ica.stable_threshold} in every seed).",
            "", f"Excess kurtosis: ICA sources median {st.ica_excess_kurtosis.summary.median:.2f}, SAE features median "
            f"{_num(sae_kurt.median if sae_kurt else None)} (features firing "
            f"on ≥ 0.1% of tokens); Gaussian noise floor ±{st.kurtosis_standard_error:.4f} (one iid standard error).",
            "", "Per-component readings: [components.md](components.md).", ""]
    if r.noise_floor is not None:
        nf = r.noise_floor
        out += ["## Noise floor: ICA on a Gaussian surrogate", "",
                "The same number of tokens, k and seeds, on Gaussian data with the residual's covariance: "
                "whatever ICA reports there is sampling noise.", "",
                table(["", "stable components", "max abs source excess kurtosis"],
                      [["Gaussian surrogate", nf.control_n_stable, f"{nf.control_max_abs_source_excess_kurtosis:.3f}"],
                       ["residual", ica.n_stable,
                        f"{max(abs(v) for v in st.ica_excess_kurtosis.per_component):.3f}"]]),
                "", f"{nf.n_ica_stable_and_above_control_kurtosis} residual components are stable and more "
                "heavy-tailed than anything in the surrogate.", ""]
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


def _code(text: str) -> str:
    """Inline code that survives backticks inside ``text``."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def components_markdown(result: InterpretationsResult, setup: SetupResult) -> str:
    """components.md: one section per ICA component, marked tokens shown as [[token]]."""
    out = [f"# ICA components of the SAE residual: {setup.description} `{setup.hook.hook_name}`", "",
           (result.note + ". " if result.note else "Marked token: `[[...]]`. ")
           + "Activation = the component's source value (unit variance).", ""]
    for c in result.components:
        out += [f"## Component {c.component}", ""]
        near = ", ".join(f"{f.feature} ({f.cos:+.2f})" + (f" [{f.neuronpedia}]" if f.neuronpedia else "")
                         for f in c.nearest_sae_features[:3])
        out += [f"- nearest SAE features (cos): {near}"]
        t = c.nearest_true_feature
        if t is not None:
            out += [f"- nearest planted feature: f{t.nearest_true_feature} (|cos| {t.abs_cos:.3f}"
                    f"{', a dark feature' if t.is_dark else ''})"]
        out += ["- frequent tokens among top activators: "
                + ", ".join(f"`{tok!r}`×{n}" for tok, n in c.frequent_top_tokens[:8])]
        if c.logit_lens is not None:
            out += ["- logit lens, promotes: " + ", ".join(f"`{tok!r}`" for tok, _ in c.logit_lens.top[:8]),
                    "- logit lens, suppresses: " + ", ".join(f"`{tok!r}`" for tok, _ in c.logit_lens.bottom[:8])]
        out += ["", "Top activating:", ""] + [f"- {e.activation:+.2f}: {_code(e.context)}" for e in c.top[:10]]
        out += ["", "Bottom activating:", ""] + [f"- {e.activation:+.2f}: {_code(e.context)}" for e in c.bottom[:5]]
        out += ["", "Quantile samples:", ""]
        out += [f"- q{e.quantile:.2f} ({e.activation:+.2f}): {_code(e.context)}" for e in c.quantiles]
        out += [""]
    return "\n".join(out)


def layers_markdown(summary: LayersSummary) -> str:
    """layers_summary.md: the per-layer table."""
    names = list(summary.layers[0].mean_max_abs_cos_to_sae) if summary.layers else []
    head = ["layer", "hook", "SAE FVU", "L0", "dead", "resid. median excess kurt.", "PCA 90%", "k", "stable",
            "stable in Gaussian control", "stable above noise floor",
            " / ".join(names) + " max abs cos to SAE", "candidate dark matter"]
    rows = [[r.layer, f"`{r.hook_name}`", f"{r.sae_fvu:.4f}", f"{r.sae_l0:.1f}", f"{r.sae_dead_fraction:.1%}",
             f"{r.residual_median_excess_kurtosis:.2f}", r.pca_components_for_90, r.k, r.n_stable,
             _num(r.control_n_stable, "d"), _num(r.n_stable_above_noise_floor, "d"),
             " / ".join(f"{r.mean_max_abs_cos_to_sae[n]:.3f}" for n in names), r.n_candidate_dark_matter]
            for r in summary.layers]
    return "\n".join(["# ICA dark matter across layers", "", table(head, rows), ""])
