"""The causal tests in markdown: report.md's section and the README's generated block, from one
:class:`~darkmatter.pipeline.results.CausalResult` (so the two can never disagree)."""

from __future__ import annotations

from darkmatter.analysis.causal import MIN_SHARE, MIN_Z
from darkmatter.pipeline.mdtable import table
from darkmatter.pipeline.results import CausalResult

HOW_TO_READ = (
    "How to read it: the SAE's reconstruction x̂ is spliced in at the hook and the model runs on; the gap between "
    "its loss and the clean loss is what the residual carries that the model uses. *Loss recovered* is SAELens's "
    "(L_zero − L_spliced) / (L_zero − L_clean). Each add-back row puts parts of the residual back on x̂ and reports "
    "the share of that gap it closes (± its standard error over held-out windows). The ICA row adds the first m "
    "components in the candidate order; PCA adds the residual's leading principal components and the matched null "
    "random rotations of the same whitened subspace, each carrying *the same residual variance* as the ICA set. "
    "ICA above its null means the ICA directions are where the model reads the residual; at the null means any "
    "directions carrying that much variance would do as well.")


def causal_markdown(c: CausalResult, k: int) -> str:
    """The splice table, the top-m table against the baselines and the per-component count."""
    t = c.table
    splice = table(["activation at the hook", "loss", "divergence", "gap closed"], [
        ["clean x", f"{t.clean_loss:.4f}", "0", "100%"],
        ["SAE reconstruction x̂ (spliced)", f"{t.spliced_loss:.4f}", f"{t.spliced_divergence:.4f}", "0%"],
        ["x̂ + residual mean", f"{t.mean_loss:.4f}", "", f"{t.mean_gap_closed.share:.1%}"],
        [f"x̂ + the residual's whole {k}-subspace (+ mean)", f"{t.subspace_loss:.4f}", "",
         f"{t.subspace_gap_closed.share:.1%}"],
        ["zero", f"{t.zero_loss:.4f}", f"{t.zero_divergence:.4f}", ""]])
    top = table(["m", "residual variance", "ICA", "PCA (same variance)", f"matched null mean (max of {t.null_draws})"],
                [[r.m, f"{r.variance:.3f}", f"{r.ica.share:.1%} ± {r.ica.se:.1%}",
                  f"{r.pca.share:.1%} ({r.pca_parts:.1f} PCs)", f"{r.null_mean:.1%} ({r.null_max:.1%})"]
                 for r in t.top_m])
    n_close = sum(e.closes_gap for e in t.components)
    best = sorted(t.components, key=lambda e: -e.add_back.share)[:3]
    return "\n".join([
        f"{t.loss_name} on {c.held_out} (divergence: {t.divergence_name}; the layers after the hook run as "
        f"`{c.route}`; {c.seconds:.0f} s). Loss recovered by the SAE: **{t.loss_recovered:.1%}**.", "", splice, "",
        "Top-m add-back, against baselines at equal variance:", "", top, "",
        f"{n_close} of {len(t.components)} components close at least {MIN_SHARE:.0%} of the gap alone (z ≥ {MIN_Z:g}); "
        "the largest: " + ", ".join(f"{e.component} ({e.add_back.share:+.1%} ± {e.add_back.se:.1%})" for e in best)
        + ".", "", HOW_TO_READ, ""])
