"""README results tables, generated from runs' results files (never typed by hand).

A run's ``ica_dark_matter_results.json`` is copied to ``docs/runs/<name>.json``; the README holds
blocks between ``<!-- generated: <table> -->`` and ``<!-- end generated -->`` markers, and
:func:`render_readme` rewrites each block from the snapshots. ``tests/pipeline/test_readme.py``
fails when the README and the snapshots disagree.

    python -m darkmatter.pipeline.report.readme     # rewrite README.md, benchmarks/RESULTS.md, docs/toy_models.md
    python -m darkmatter.pipeline.report.readme --check  # exit 1 if either is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from darkmatter.analysis.directions import ICA
from darkmatter.pipeline.report.causal_table import causal_markdown
from darkmatter.pipeline.report.completeness_table import completeness_markdown
from darkmatter.pipeline.report.kill_table import kill_markdown
from darkmatter.pipeline.report.mdtable import table
from darkmatter.pipeline.report.speed_table import speed_markdown
from darkmatter.pipeline.results import legacy
from darkmatter.pipeline.results.document import Results

ROOT = Path(__file__).resolve().parents[3]
RUNS = ROOT / "docs" / "runs"
#: Files with generated blocks.
GENERATED_FILES = (ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", ROOT / "docs" / "toy_models.md",
                   ROOT / "docs" / "commits.md")
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def load(name: str, runs: Path = RUNS) -> Results:
    """The results snapshot ``docs/runs/<name>.json``, typed; a schema-6 snapshot is read in today's shape
    (:func:`darkmatter.pipeline.results.legacy.upgrade`), an older one as plain JSON where a table needs
    it, e.g. :func:`corpus_table`."""
    from pydantic import TypeAdapter

    data = json.loads((runs / f"{name}.json").read_text())
    data.pop("schema_version", None)
    data.pop("run_id", None)
    return TypeAdapter(Results).validate_python(legacy.upgrade(data))


def _provenance(r: Results, name: str) -> str:
    timed = [s.timing.seconds for s in r.steps if s.timing]
    return (f"Generated from `docs/runs/{name}.json` (preset `{r.config['source']['preset']}`; {r.machine}; "
            f"{r.generated}; {sum(timed):.0f} s for steps 01–{len(timed):02d}).")


def run_table(r: Results, name: str) -> str:
    """The "quantity | value" table of one run (``name``: its snapshot's name)."""
    m, d, ica, st, sim = r.sae_stats.metrics, r.diagnostics, r.ica, r.statistics, r.similarity
    sur = d.gaussian_surrogate
    val = r.sae_training.result.validation if r.sae_training else None
    sae_kurt = st.sae_excess_kurtosis.summary
    timed = {s.script[:2]: s.timing.seconds for s in r.steps if s.timing}
    rows = [
        [f"SAE ({r.setup.sae.sae_class}, d_sae {m.d_sae:,}) on the analysed tokens",
         f"FVU {m.fvu:.3f}, L0 {m.mean_l0:.1f}, dead {m.dead_fraction:.1%}, mean cos(x, x̂) {m.mean_cos_x_xhat:.3f}"
         + (f" (validation split of the training text: FVU {val['fvu']:.3f}, dead {val['dead_fraction']:.1%})"
            if val else "")],
        ["tokens analysed / excluded", f"{m.n_tokens:,} / {r.sae_stats.bos_positions_excluded:,} BOS positions + "
         f"{r.sae_stats.massive_tokens_excluded:,} massive-activation tokens"],
        ["residual excess kurtosis per dimension",
         f"mean {d.residual_excess_kurtosis.mean:.2f}, median {d.residual_excess_kurtosis.median:.2f} (activations: "
         f"median {d.activation_excess_kurtosis.median:.2f}); a Gaussian surrogate with the residual's covariance and "
         f"{m.n_tokens:,} tokens reaches at most {sur.max_abs:.3f}; {sur.n_residual_dims_above_max_abs} of "
         f"{d.d_model} residual dimensions exceed that"],
        ["PCA components for 90 / 95 / 99% of residual variance",
         " / ".join(str(v) for v in d.pca_components_for.values()) + f" of {d.d_model}"],
        ["documents analysed", f"{ica.n_units:,} {ica.resampling_unit}s; design effect of source kurtosis "
         f"{ica.design_effect:.2f}, effective sample size {ica.effective_tokens:,.0f} tokens (step 03's, per "
         f"residual dimension: design effect {d.design_effect:.2f}, {d.effective_tokens:,.0f} tokens)"],
        ["ICA", f"k = {ica.k} (keeps {ica.pca_variance_kept:.1%} of residual variance), {len(ica.seeds)} fits "
         f"(all rows, then both halves of {ica.stability_splits} {ica.resampling_unit} splits); {ica.n_stable}/{ica.k} "
         f"stable (reappear in ≥ {ica.stable_frequency:.0%} of the half-fits that can tell; {ica.n_undetermined} "
         f"undetermined), {ica.n_settled} settled, {ica.n_above_floor} above the noise floor, {ica.n_reproducible} "
         "all three"],
        ["k sweep: settled, stable and above the floor",
         ", ".join(f"k={x.k}: {x.n_reproducible}" + ("" if x.admissible else " (n_eff too small)")
                   for x in ica.k_sweep)
         + f" (n_eff ≥ {ica.samples_per_parameter:g}·k² for the half-fits allows k ≤ {ica.k_bound} at the chosen k; "
         f"raw n would allow {ica.max_supported_k})"],
    ]
    if r.noise_floor is not None:
        nf = r.noise_floor
        rows.append(["matched control (norm-matched elliptical surrogate; same n, k, seeds, restarts and optimisation)",
                     f"{nf.control_n_stable}/{ica.k} stable; largest source excess kurtosis (the floor) "
                     f"{nf.control_max_abs_source_excess_kurtosis:.3f} (95% of bootstrap draws "
                     f"{ica.floor_interval[0]:.3f}–{ica.floor_interval[1]:.3f})"])
    an, anp = sim.against_null, sim.against_null_projected
    rows += [
        ["mean max \\|cos\\| to the SAE decoder (raw / projected into the subspace)",
         ", ".join(f"{n} {s.mean_max_abs_cos:.3f} / {sim.sets_projected[n].mean_max_abs_cos:.3f}"
                   for n, s in sim.sets.items())
         + f"; matched null 99th percentile {an.null_p99:.3f} / {anp.null_p99:.3f}, ICA above it "
         f"{an.share_above_p99:.0%} / {anp.share_above_p99:.0%}"],
        ["excess kurtosis of sources", f"ICA median {st.ica_excess_kurtosis.summary.median:.2f} vs SAE features firing "
         f"on ≥ 0.1% of tokens: median {'n/a' if sae_kurt is None else f'{sae_kurt.median:.0f}'} (with their zeros)"],
        ["dark-matter candidates (the one rule)", f"{len(r.candidate_dark_matter_components)}; "
         + (r.detection_limit or "detection limit not measured")],
        *([["amplitude error (step 03)", f"{r.amplitude.share_in_active_span:.1%} of the residual's energy along the "
            f"active latents' decoder rows (null {r.amplitude.share_in_null_span:.1%}); refitting their amplitudes: "
            f"FVU {r.amplitude.fvu:.3f} → {r.amplitude.fvu_refit:.3f}"]] if r.amplitude else []),
        *([["linear part (Engels et al. 2024; held-out documents)",
            f"{r.linear_split.split.variance_predicted:.1%} of residual variance, R² "
            f"{r.linear_split.split.norm_predicted:.2f} of its norm; per band (PCs "
            + ", ".join(r.linear_split.split.bands) + "): "
            + ", ".join(f"{v:.0%}" for v in r.linear_split.split.band_variance_predicted)]]
          if r.linear_split else []),
        ["time per step (s)", ", ".join(f"{k}: {v:.1f}" for k, v in timed.items())
         + f"; total {sum(timed.values()):.0f}"],
        ["peak RAM (process, max over steps)",
         f"{max((s.timing.peak_rss_mb for s in r.steps if s.timing), default=0) / 1024:.1f} GB"],
    ]
    if r.sae_stats.throughput is not None:
        tp = r.sae_stats.throughput
        rows.append(["02 throughput (tokens/s)", f"model {tp.tokens_per_second_model:,.0f}, model + SAE "
                     f"{tp.tokens_per_second_model_and_sae:,.0f}, end to end {tp.tokens_per_second_end_to_end:,.0f}"])
    return _provenance(r, name) + "\n\n" + table(["quantity", "value"], rows) + "\n"


def noise_floor_table(runs: dict[str, Results]) -> str:
    """One row per run: real stable components against the matched control."""
    rows = []
    for label, r in runs.items():
        nf, ica = r.noise_floor, r.ica
        if nf is None or ica.control is None:
            continue
        truth = ""
        if r.groundtruth is not None:
            g = r.groundtruth.sets[ICA]
            truth = (f" ({g.n_found}/{g.n_dark} dark features found, {r.groundtruth.n_stable_false_discoveries} false "
                     "discoveries among the stable)")
        rows.append([label, f"{r.diagnostics.n_tokens:,} × {ica.k}", f"{ica.n_stable} / {ica.k}{truth}",
                     nf.control_n_stable, f"{ica.control.stability_max:.2f}",
                     f"{nf.control_max_abs_source_excess_kurtosis:.3f}", f"{nf.n_above_floor} / {ica.k}",
                     f"{nf.n_reproducible}", f"{nf.n_candidates}"])
    head = ["run", "tokens × k", "real: stable / k", "matched control: stable", "control: highest reappearance",
            "control: max \\|source excess kurtosis\\|", "real sources above the floor", "settled, stable and above",
            "candidates"]
    return ("Generated from " + "; ".join(f"{label}: {r.machine}, {r.generated}" for label, r in runs.items())
            + ".\n\n" + table(head, rows) + "\n")


def corpus_table(runs: Path, before: str, after: str) -> str:
    """The offline default before and after the corpus of many documents: documents, design effects,
    effective sample sizes, k and counts. The earlier snapshot is read as plain JSON (an older schema)."""
    old = json.loads((runs / f"{before}.json").read_text())
    new = load(after, runs)
    oi, od = old["ica"], old["diagnostics"]

    def row(label: str, ica: dict, diag: dict, cands: int, text: str, generated: str) -> list[str]:
        return [label, text, f"{ica['n_units']:,}", f"{diag['design_effect']:.2f} / {diag['effective_tokens']:,.0f}",
                f"{ica['design_effect']:.2f} / {ica['effective_tokens']:,.0f}", str(ica["k"]),
                f"{ica['n_stable']}", str(cands), generated]

    ni = {"n_units": new.ica.n_units, "design_effect": new.ica.design_effect,
          "effective_tokens": new.ica.effective_tokens, "k": new.ica.k, "n_stable": new.ica.n_stable}
    nd = {"design_effect": new.diagnostics.design_effect, "effective_tokens": new.diagnostics.effective_tokens}
    rows = [row(f"`docs/runs/{before}.json`", oi, od, len(old["candidate_dark_matter_components"]),
                "Python documentation", old["generated"]),
            row(f"`docs/runs/{after}.json`", ni, nd, len(new.candidate_dark_matter_components),
                new.setup.hook.text, new.generated)]
    head = ["run", "text", "documents analysed", "03: design effect / n_eff (per dimension)",
            "04: design effect / n_eff (source kurtosis)", "k", "stable", "candidates", "date"]
    return table(head, rows) + "\n"


def completeness_table(r: Results, name: str) -> str:
    """Step 07's injection–recovery of one run (``completeness_table.completeness_markdown``)."""
    if r.completeness is None:
        raise ValueError(f"docs/runs/{name}.json has no completeness grid: rerun it with --completeness-runs ≥ 1")
    return _provenance(r, name) + "\n\n" + completeness_markdown(r.completeness)


def k_sweep_table(r: Results, name: str) -> str:
    """Step 04's k sweep of one run: what each k gave and its wall time (fit + control)."""
    ica = r.ica
    rows = [[x.k, f"{x.variance_kept:.1%}", x.n_settled, x.n_stable, x.n_above_floor, x.n_reproducible,
             "n/a" if x.control_max_kurtosis is None else f"{x.control_max_kurtosis:.3f}", f"{x.design_effect:.2f}",
             f"{x.effective_tokens:,.0f}", f"{x.k_bound}" + ("" if x.admissible else " (not admissible)"),
             f"{x.seconds_fit:.1f}", f"{x.seconds_control:.1f}", f"{x.seconds_fit + x.seconds_control:.1f}"]
            for x in ica.k_sweep]
    head = ["k", "residual variance kept", "settled", "stable", "above floor", "all three", "control max excess kurt.",
            "design effect", "n_eff", "allows k ≤", "fit (s)", "control (s)", "04 time at this k (s)"]
    return (f"Generated from `docs/runs/{name}.json` ({r.machine}; {r.generated}; {ica.n_fit_tokens:,} tokens, "
            f"{len(ica.seeds)} seeds, backend {ica.backend}; chosen k = {ica.k}):\n\n" + table(head, rows) + "\n")


def toy_table(runs: Path) -> str:
    """The toy-model sweep (``scripts/sweep_toy_models.py``'s toy_sweep.json), mean ± std over seeds."""
    doc = json.loads((runs / "toy_sweep.json").read_text())
    names = [k.removeprefix("missed_max_cos_") for k in doc["summary"][0]["mean"]
             if k.startswith("missed_max_cos_") and k != "missed_max_cos_ica"]
    rows = []
    for r in doc["summary"]:
        m, sd = r["mean"], r["std"]
        rows.append([r["arch"], f"{r['sparsity']:.2f}", f"{m['ae_loss']:.1e} ({(1 - r['sparsity']) / 3:.3f})",
                     f"{m['sae_l0']:.2f} ± {sd['sae_l0']:.2f}", f"{m['sae_dead']:.0f}",
                     f"{m['procrustes_similarity']:.3f} ± {sd['procrustes_similarity']:.3f}",
                     f"{m['matched_abs_cos']:.3f}", f"{m['sae_fvu']:.3f}",
                     f"{m['n_missed']:.1f} → {m['n_found_by_ica']:.1f}",
                     " / ".join(f"{m[f'missed_max_cos_{n}']:.2f}" for n in ["ica", *names]),
                     f"{r['n_collapsed']}/{r['n_runs']}"])
    head = ["arch", "S", "AE loss (zero baseline)", "SAE L0", "dead latents", "Procrustes sim", "matched \\|cos\\|",
            "SAE FVU", "missed → found by ICA", "missed features' best \\|cos\\|: ICA / " + " / ".join(names),
            "collapsed"]
    st = doc["settings"]
    return (f"Generated from `docs/runs/toy_sweep.json` (seeds {st['seeds'][0]}–{st['seeds'][-1]}, "
            f"{doc['wall_time_s']:.0f} s):\n\n" + table(head, rows) + "\n")


def planted_sweep_table(runs: Path) -> str:
    """The planted sweep (``scripts/sweep_planted.py``'s planted_sweep.json): the default setting,
    then each varied value, every direction set's recovery."""
    doc = json.loads((runs / "planted_sweep.json").read_text())
    base = doc["base"]
    names = list(doc["runs"][0]["sets"])
    others = [n for n in names if n != ICA]
    rows, seen_default = [], False
    for r in doc["runs"]:
        default = r["value"] == base[r["varied"]]
        if default and seen_default:
            continue
        label = ("default: " + ", ".join(f"{k} {base[k]:g}" for k in ("noise_std", "p_fire", "n_withheld"))
                 if default else f"{r['varied']} {r['value']:g}")
        seen_default |= default
        i = r["sets"][ICA]
        rows.append([label, f"{r['fvu']:.3f}", r["k"], f"{i['n_found']}/{i['n_dark']}", f"{i['mean_max_abs_cos']:.3f}",
                     i["n_false_discoveries"]]
                    + [f"{r['sets'][o]['n_found']} ({r['sets'][o]['mean_max_abs_cos']:.3f})" for o in others])
    head = ["setting", "SAE FVU", "k", f"{ICA} found", f"{ICA} mean max \\|cos\\|", f"{ICA} false"]
    head += [f"{o} found (mean)" for o in others]
    return (f"Generated from `docs/runs/planted_sweep.json` ({doc['n_tokens']:,} tokens per run, "
            f"{doc['seconds']:.0f} s):\n\n" + table(head, rows) + "\n")


#: Generated README blocks: name → renderer over the snapshots in docs/runs/.
TABLES: dict[str, Callable[[Path], str]] = {
    "offline-default": lambda runs: run_table(load("offline_default", runs), "offline_default"),
    "noise-floor": lambda runs: noise_floor_table({"`--preset planted` (docs/runs/planted.json)": load("planted", runs),
                                                   "offline default (docs/runs/offline_default.json)":
                                                       load("offline_default", runs)}),
    "k-sweep": lambda runs: k_sweep_table(load("offline_default", runs), "offline_default"),
    "corpus": lambda runs: corpus_table(runs, "offline_default_python_docs", "offline_default"),
    "completeness": lambda runs: completeness_table(load("offline_default", runs), "offline_default"),
    "study": lambda runs: run_table(load("study_2m", runs), "study_2m"),
    "study-completeness": lambda runs: completeness_table(load("study_2m", runs), "study_2m"),
    "study-k-sweep": lambda runs: k_sweep_table(load("study_2m", runs), "study_2m"),
    "causal": lambda runs: _causal(runs, "offline_default"),
    "toy-sweep": toy_table,
    "planted-sweep": planted_sweep_table,
    "kill-anywhere": kill_markdown,
    "speed": lambda runs: speed_markdown(load("offline_default_before_speed", runs), load("offline_default", runs),
                                         ("offline_default_before_speed", "offline_default")),
}


def _causal(runs: Path, name: str) -> str:
    r = load(name, runs)
    if r.causal is None:
        raise ValueError(f"docs/runs/{name}.json has no causal tests: rerun it with step 06")
    return _provenance(r, name) + "\n\n" + causal_markdown(r.causal, r.ica.k)


def render_readme(text: str, runs: Path = RUNS) -> str:
    """``text`` with every generated block rewritten. Raises KeyError for an unknown block name."""
    return BLOCK.sub(lambda m: m.group(1) + TABLES[m.group("name")](runs) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the README's results tables from docs/runs/*.json.")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not what the runs give")
    args = parser.parse_args(argv)
    stale = []
    for path in GENERATED_FILES:
        text = path.read_text()
        new = render_readme(text)
        if args.check:
            stale += [path.name] if new != text else []
            continue
        path.write_text(new)
        print(f"rewrote {len(BLOCK.findall(new))} generated blocks of {path}")
    if stale:
        print(f"{', '.join(stale)} stale: run python -m darkmatter.pipeline.report.readme", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
