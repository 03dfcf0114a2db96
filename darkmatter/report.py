"""The final results JSON, report.md and the per-component page components.md.

The schema of ``ica_dark_matter_results.json`` is documented in README.md
("Results file"); :data:`SCHEMA_VERSION` changes whenever it does.
"""

from __future__ import annotations

from typing import Any

from darkmatter.compare import LOW
from darkmatter.config import Config

SCHEMA_VERSION = 2
PLOTS = ("residual_kurtosis.png", "residual_pca.png", "ica_sae_similarity.png", "ica_vs_sae_kurtosis.png")


def aggregate(cfg: Config, parts: dict[str, Any], arrays: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Build the results document from the steps' JSON files.

    Args:
        parts: parsed JSON by stem: setup, sae_stats, diagnostics, ica, similarity,
            interpretations, statistics, and optionally sae_training and timings.
        arrays: {file name: {"shape", "dtype"}} of every .npy in the run.
    """
    diag, ica, sim, st, sae = (parts[p] for p in ("diagnostics", "ica", "similarity", "statistics", "sae_stats"))
    comps = parts["interpretations"]["components"]
    summary = {
        "sae": {"fvu": sae["fvu"], "mean_l0": sae["mean_l0"], "dead_fraction": sae["dead_fraction"],
                "mse": sae["mse"], "mean_cos_x_xhat": sae["mean_cos_x_xhat"], "d_sae": sae["d_sae"]},
        "residual": {"fvu": diag["fvu"], "mean_excess_kurtosis": diag["residual_excess_kurtosis"]["mean"],
                     "median_excess_kurtosis": diag["residual_excess_kurtosis"]["median"],
                     "is_non_gaussian": diag["residual_is_non_gaussian"],
                     "pca_components_for": diag["pca_components_for"]},
        "ica": {"k": ica["k"], "all_converged": ica["all_converged"],
                "all_settled_converged": ica.get("all_settled_converged", ica["all_converged"]),
                "n_settled": [s.get("n_settled") for s in ica["seeds"]],
                "iterations": [s["n_iter"] for s in ica["seeds"]], "n_stable": ica["n_stable"],
                "variance_explained": ica["reconstruction_variance_explained"]},
        "similarity": {name: sim[name] for name in ("ICA", "random", "PCA")},
        "kurtosis": {"ica_median": st["ica_excess_kurtosis"]["median"],
                     "ica_mean": st["ica_excess_kurtosis"]["mean"],
                     "sae_median": st["sae_excess_kurtosis"].get("median"),
                     "sae_mean": st["sae_excess_kurtosis"].get("mean"),
                     "noise_floor_se": st["kurtosis_standard_error"]},
    }
    novel = [c["component"] for c, s in zip(comps, sim["components"])
             if s["max_abs_cos"] < LOW and ica["stability_min_abs_cos"][c["component"]] >= ica["stable_threshold"]]
    headline = [
        f"SAE: FVU {sae['fvu']:.4f}, L0 {sae['mean_l0']:.1f}, dead {sae['dead_fraction']:.1%}",
        f"residual: mean excess kurtosis {summary['residual']['mean_excess_kurtosis']:.2f}, "
        f"{diag['pca_components_for']['90%']} PCA components for 90% of its variance",
        f"ICA: k={ica['k']}, {_convergence(ica)} (iterations {summary['ica']['iterations']}), "
        f"{ica['n_stable']}/{ica['k']} stable across seeds",
        "mean max |cos| to the SAE: " + ", ".join(
            f"{name} {sim[name]['mean_max_abs_cos']:.3f}" for name in ("ICA", "random", "PCA")),
        f"excess kurtosis: ICA median {summary['kurtosis']['ica_median']:.2f} vs SAE features "
        f"{_num(summary['kurtosis']['sae_median'])}",
        f"{len(novel)} stable ICA components lie far (|cos| < {LOW}) from every SAE feature: {novel[:20]}",
    ]
    control = ica.get("gaussian_control")
    if control:
        summary["noise_floor"] = {
            "control_n_stable": control["n_stable"],
            "control_max_abs_source_excess_kurtosis": control["source_excess_kurtosis_max_abs"],
            "n_ica_above_control_kurtosis": st["gaussian_control"]["n_ica_components_above_floor"],
            "n_ica_stable_and_above_control_kurtosis": ica["n_stable_above_control"],
            "residual_dims_above_surrogate_kurtosis":
                diag["gaussian_surrogate_excess_kurtosis"]["n_residual_dims_above_max_abs"]}
        nf = summary["noise_floor"]
        headline.append(
            f"noise floor (ICA on a Gaussian surrogate, same n, k, seeds): {nf['control_n_stable']} stable, max "
            f"|excess kurtosis| {nf['control_max_abs_source_excess_kurtosis']:.3f}; real components above it "
            f"{nf['n_ica_above_control_kurtosis']}/{ica['k']}, stable and above it "
            f"{nf['n_ica_stable_and_above_control_kurtosis']}")
    truth = parts.get("groundtruth")
    if truth:
        summary["groundtruth"] = {name: truth[name] for name in ("ICA", "PCA", "random")}
        headline.append(
            f"planted ground truth, {len(truth['dark_features'])} dark features: found at |cos| > "
            f"{truth['found_cos']}: " + ", ".join(f"{n} {truth[n]['n_found']}" for n in ("ICA", "PCA", "random"))
            + f"; ICA false discoveries {truth['ICA']['n_false_discoveries']}/{truth['k']}")
    return {
        "schema_version": SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "headline": headline,
        "verdict": diag["verdict"],
        "summary": summary,
        "candidate_dark_matter_components": novel,
        "setup": parts["setup"],
        "sae_training": parts.get("sae_training"),
        "groundtruth": truth,
        "sae_stats": sae,
        "diagnostics": diag,
        "ica": ica,
        "similarity": {k: v for k, v in sim.items() if k != "components"},
        "statistics": st,
        "components": [{"component": c["component"],
                        "max_abs_cos_to_sae": s["max_abs_cos"], "best_sae_feature": s["best_feature"],
                        "stability": ica["stability_min_abs_cos"][c["component"]],
                        "excess_kurtosis": st["ica_excess_kurtosis"]["per_component"][c["component"]],
                        "top_tokens": [t for t, _ in c["frequent_top_tokens"][:5]]}
                       for c, s in zip(comps, sim["components"])],
        "timings": parts.get("timings", {}),
        "arrays": arrays,
        "plots": list(PLOTS) + (["groundtruth_recovery.png"] if truth else []),
    }


def _convergence(ica: dict[str, Any]) -> str:
    """One phrase on how the FastICA runs ended."""
    if ica["all_converged"]:
        return "converged in every seed"
    seeds = ica["seeds"]
    if all(r.get("stopped_on_stability") for r in seeds):
        settled = "/".join(str(r.get("n_settled")) for r in seeds)
        done = " and refined to tol" if ica.get("all_settled_converged") else ""
        return f"stopped once stable in every seed ({settled} of {ica['k']} components settled{done})"
    return "NOT converged (hit the iteration cap)"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def report_markdown(results: dict[str, Any]) -> str:
    """report.md: headline numbers, verdicts, plots, per-step timings and every .npy with its shape."""
    s = results["summary"]
    cfg = results["config"]
    out = [f"# ICA dark matter report: {cfg['model']} `{cfg['hook_name']}`", "",
           f"Preset `{cfg['preset']}`; SAE {results['setup']['sae']['source']} "
           f"(d_sae {s['sae']['d_sae']:,}); {results['diagnostics']['n_tokens']:,} tokens.", "",
           "## Headline", ""] + [f"- {line}" for line in results["headline"]]
    out += ["", "## Verdict", "", results["verdict"], "", "## SAE", "",
            _table(["FVU", "MSE", "mean L0", "dead fraction", "mean cos(x, x̂)"],
                   [[f"{s['sae']['fvu']:.4f}", f"{s['sae']['mse']:.4g}", f"{s['sae']['mean_l0']:.1f}",
                     f"{s['sae']['dead_fraction']:.2%}", f"{s['sae']['mean_cos_x_xhat']:.3f}"]])]
    out += ["", "## ICA against the SAE dictionary", "",
            _table(["directions", "mean max abs cos", "> 0.8", "0.3–0.8", "< 0.3"],
                   [[name, f"{v['mean_max_abs_cos']:.3f}", v["above_0.8"], v["between_0.3_0.8"], v["below_0.3"]]
                    for name, v in s["similarity"].items()])]
    ica = results["ica"]
    out += ["", "## ICA", "",
            f"k = {ica['k']} ({ica['k_rule']}); the k-component reconstruction explains "
            f"{ica['reconstruction_variance_explained']:.4f} of the residual variance "
            f"(PCA kept {ica['pca_variance_kept']:.4f}).", "",
            _table(["seed", "tokens", "iterations", "converged", "stopped on stability (settled)",
                    "settled converged", "final change"],
                   [[r["seed"], f"{r.get('n_tokens', 0):,}", r["n_iter"], r["converged"],
                     f"{r.get('stopped_on_stability', False)} ({_count(r.get('n_settled'))})",
                     _count(r.get("settled_converged")),
                     "n/a" if r.get("final_change") is None else f"{r['final_change']:.1e}"]
                    for r in ica["seeds"]]), "",
            f"{ica['n_stable']}/{ica['k']} components are stable (matched |cos| ≥ {ica['stable_threshold']} "
            "in every seed).", "",
            f"Excess kurtosis: ICA sources median {s['kurtosis']['ica_median']:.2f}, SAE features "
            f"median {_num(s['kurtosis']['sae_median'])} (features firing on ≥ 0.1% of tokens); "
            f"Gaussian noise floor ±{s['kurtosis']['noise_floor_se']:.4f} "
            "(one standard error).", "",
            "Per-component readings: [components.md](components.md).", ""]
    if "noise_floor" in s:
        nf = s["noise_floor"]
        out += ["## Noise floor: ICA on a Gaussian surrogate", "",
                "The same number of tokens, k and seeds, on Gaussian data with the residual's covariance: "
                "whatever ICA reports there is sampling noise.", "",
                _table(["", "stable components", "max abs source excess kurtosis"],
                       [["Gaussian surrogate", nf["control_n_stable"],
                         f"{nf['control_max_abs_source_excess_kurtosis']:.3f}"],
                        ["residual", ica["n_stable"],
                         f"{max(abs(v) for v in results['statistics']['ica_excess_kurtosis']['per_component']):.3f}"]]),
                "", f"{nf['n_ica_stable_and_above_control_kurtosis']} residual components are stable and more "
                "heavy-tailed than anything in the surrogate.", ""]
    truth = results.get("groundtruth")
    if truth:
        out += ["## Ground truth (planted)", "",
                f"{len(truth['dark_features'])} dark features ({truth['dark_rule']}).", "",
                _table(["directions", "mean max abs cos", f"found (> {truth['found_cos']})",
                        f"false discoveries (< {truth['false_discovery_cos']} to every true feature)"],
                       [[n, f"{truth[n]['mean_max_abs_cos']:.3f}", f"{truth[n]['n_found']}/{truth[n]['n_dark']}",
                         f"{truth[n]['n_false_discoveries']}/{truth[n]['n_directions']}"]
                        for n in ("ICA", "PCA", "random")]), ""]
    out += ["## Plots", ""]
    out += [f"![{p}]({p})" for p in results["plots"]]
    timings = results["timings"]
    rows = [[k, f"{v['seconds']:.1f}", f"{v['peak_rss_mb']:.0f}"] for k, v in timings.items()]
    if timings:
        rows.append(["**total**", f"{sum(v['seconds'] for v in timings.values()):.1f}",
                     f"{max(v['peak_rss_mb'] for v in timings.values()):.0f} (max)"])
    out += ["", "## Time and memory", "", _table(["step", "seconds", "peak RAM (MiB)"], rows)]
    out += ["", "## Arrays", "",
            _table(["file", "shape", "dtype"],
                   [[f"`{k}`", " × ".join(str(x) for x in v["shape"]), v["dtype"]]
                    for k, v in results["arrays"].items()]), ""]
    return "\n".join(out)


def _code(text: str) -> str:
    """Inline code that survives backticks inside ``text``."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def components_markdown(components: list[dict[str, Any]], cfg: Config, setup: dict[str, Any]) -> str:
    """components.md: one section per ICA component, marked tokens shown as **[[token]]**."""
    out = [f"# ICA components of the SAE residual: {setup['model']} `{cfg.hook_name}`", "",
           ("Planted run: a row's context lists its active true features, `f17*:1.52` = feature 17 at "
            "magnitude 1.52, `*` = a dark feature." if cfg.planted else "Marked token: `[[...]]`.")
           + " Activation = the component's source value (unit variance).", ""]
    for c in components:
        out += [f"## Component {c['component']}", ""]
        near = ", ".join(f"{f['feature']} ({f['cos']:+.2f})" + (f" [{f['neuronpedia']}]" if "neuronpedia" in f else "")
                         for f in c["nearest_sae_features"][:3])
        out += [f"- nearest SAE features (cos): {near}"]
        if "nearest_true_feature" in c:
            t = c["nearest_true_feature"]
            out += [f"- nearest planted feature: f{t['nearest_true_feature']} (|cos| {t['abs_cos']:.3f}"
                    f"{', a dark feature' if t['is_dark'] else ''})"]
        out += ["- frequent tokens among top activators: "
                + ", ".join(f"`{t!r}`×{n}" for t, n in c["frequent_top_tokens"][:8])]
        if "logit_lens" in c:
            out += ["- logit lens, promotes: " + ", ".join(f"`{t!r}`" for t, _ in c["logit_lens"]["top"][:8]),
                    "- logit lens, suppresses: " + ", ".join(f"`{t!r}`" for t, _ in c["logit_lens"]["bottom"][:8])]
        out += ["", "Top activating:", ""]
        out += [f"- {e['activation']:+.2f}: {_code(e['context'])}" for e in c["top"][:10]]
        out += ["", "Bottom activating:", ""]
        out += [f"- {e['activation']:+.2f}: {_code(e['context'])}" for e in c["bottom"][:5]]
        out += ["", "Quantile samples:", ""]
        out += [f"- q{e['quantile']:.2f} ({e['activation']:+.2f}): {_code(e['context'])}" for e in c["quantiles"]]
        out += [""]
    return "\n".join(out)


def layers_summary(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One row per layer from each layer's ica_dark_matter_results.json."""
    rows = []
    for layer, r in sorted(results.items()):
        s = r["summary"]
        nf = s.get("noise_floor", {})
        rows.append({
            "layer": layer, "hook_name": r["config"]["hook_name"], "outputs": r["config"]["outputs"],
            "sae_fvu": s["sae"]["fvu"], "sae_l0": s["sae"]["mean_l0"], "sae_dead_fraction": s["sae"]["dead_fraction"],
            "residual_median_excess_kurtosis": s["residual"]["median_excess_kurtosis"],
            "pca_components_for_90": s["residual"]["pca_components_for"]["90%"],
            "k": s["ica"]["k"], "n_stable": s["ica"]["n_stable"],
            "control_n_stable": nf.get("control_n_stable"),
            "n_stable_above_noise_floor": nf.get("n_ica_stable_and_above_control_kurtosis"),
            "ica_mean_max_abs_cos_to_sae": s["similarity"]["ICA"]["mean_max_abs_cos"],
            "random_mean_max_abs_cos_to_sae": s["similarity"]["random"]["mean_max_abs_cos"],
            "ica_median_excess_kurtosis": s["kurtosis"]["ica_median"],
            "n_candidate_dark_matter": len(r["candidate_dark_matter_components"]),
        })
    return {"schema_version": SCHEMA_VERSION, "layers": rows}


def layers_markdown(table: dict[str, Any]) -> str:
    """layers_summary.md: the per-layer table."""
    head = ["layer", "hook", "SAE FVU", "L0", "dead", "resid. median excess kurt.", "PCA 90%", "k",
            "stable", "stable in Gaussian control", "stable above noise floor",
            "ICA / random max abs cos to SAE", "candidate dark matter"]
    rows = [[r["layer"], f"`{r['hook_name']}`", f"{r['sae_fvu']:.4f}", f"{r['sae_l0']:.1f}",
             f"{r['sae_dead_fraction']:.1%}", f"{r['residual_median_excess_kurtosis']:.2f}",
             r["pca_components_for_90"], r["k"], r["n_stable"], _count(r["control_n_stable"]),
             _count(r["n_stable_above_noise_floor"]),
             f"{r['ica_mean_max_abs_cos_to_sae']:.3f} / {r['random_mean_max_abs_cos_to_sae']:.3f}",
             r["n_candidate_dark_matter"]] for r in table["layers"]]
    return "\n".join(["# ICA dark matter across layers", "", _table(head, rows), ""])
