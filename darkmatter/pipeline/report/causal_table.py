"""The causal tests in markdown: report.md's section and the README's generated block, from one
:class:`~darkmatter.pipeline.results.CausalResult` (so the two can never disagree)."""

from __future__ import annotations

import math

from darkmatter.analysis.causal import ComponentEffect, GapClosed
from darkmatter.pipeline.report.mdtable import table
from darkmatter.pipeline.results import CausalResult

HOW_TO_READ = (
    "How to read it: the SAE's reconstruction x̂ is spliced in at the hook and the model runs on; the gap between "
    "its loss and the clean loss is what the residual carries that the model uses. *Loss recovered (SAELens)* is "
    "`sae_lens.evals`' (L_zero − L_spliced) / (L_zero − L_clean): x̂ at every token but BOS, zero at every position "
    "(BOS included), scored on the predictions made at non-BOS tokens; *loss recovered (analysed positions)* splices "
    "and zeroes only the positions the run analyses (no BOS, no massive activation). The random-error row adds, at "
    "each analysed position, an error of the same norm as x − x̂ in a random direction (Gurnee 2024): an SAE error "
    "that costs more than a random one of its size is pathological. Each add-back row puts parts of the residual "
    "back on x̂ and reports the share of the gap it closes, ± its standard error from the spread of per-document "
    "totals (a ratio estimator's delta-method SE; windows of one document are not independent). Per component: "
    "its part against a matched-null part carrying the same residual variance (a random direction of the same "
    "whitened subspace) on the same windows; the test is the paired difference, one-sided (Student's t with "
    "documents − 1 degrees of freedom), Holm-corrected over the tested components; a component *closes the gap* "
    "when it closes at least the minimum share and survives Holm. Top m: the held-out documents are split in two "
    "halves; on the first, the parts of ICA, PCA and every null draw are each ordered by their first-order effect "
    "on the loss (attribution patching); on the second, the first m ICA parts are added back against PCA and the "
    "null draws carrying *the same residual variance*. ICA above its null means the ICA directions are where the "
    "model reads the residual; at the null means any directions carrying that much variance would do as well.")


def _gap(g: GapClosed | None) -> str:
    return "–" if g is None or not math.isfinite(g.share) else f"{g.share:+.2%} ± {g.se:.2%}"


def _p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _component_row(e: ComponentEffect) -> list[str]:
    v = e.versus_null
    assert v is not None
    return [str(e.component), _gap(e.add_back), _gap(e.null_add_back), f"{v.difference:+.2%} ± {v.se:.2%}",
            f"{v.z:.1f}" if math.isfinite(v.z) else "–", _p(v.p), "yes" if e.holm else "no",
            "**yes**" if e.closes_gap else "no"]


def causal_markdown(c: CausalResult, k: int) -> str:
    """The splice table, the top-m table against the baselines and the per-component tests."""
    t = c.table
    splice = table(["activation at the hook", "loss", "divergence", "gap closed"], [
        ["clean x", f"{t.clean_loss:.4f}", "0", "100%"],
        ["SAE reconstruction x̂ (spliced)", f"{t.spliced_loss:.4f}", f"{t.spliced_divergence:.4f}", "0%"],
        ["x + random error of norm ‖x − x̂‖", f"{t.random_error_loss:.4f}", f"{t.random_error_divergence:.4f}", ""],
        ["x̂ + residual mean", f"{t.mean_loss:.4f}", "", _gap(t.mean_gap_closed)],
        [f"x̂ + the residual's whole {k}-subspace (+ mean)", f"{t.subspace_loss:.4f}", "", _gap(t.subspace_gap_closed)],
        ["zero", f"{t.zero_loss:.4f}", f"{t.zero_divergence:.4f}", ""]])
    top = table(["m", "residual variance", "ICA", "PCA (same variance)",
                 f"matched null: mean [95% range of {t.null_draws}]", "ICA − null (paired)", "p (ICA > null)"],
                [[r.m, f"{r.variance:.3f}", _gap(r.ica), f"{r.pca.share:+.1%} ({r.pca_parts:.1f} PCs)",
                  f"{r.null_mean:+.1%} [{r.null_low:+.1%}, {r.null_high:+.1%}]",
                  f"{r.versus_null.difference:+.1%} ± {r.versus_null.se:.1%}", _p(r.versus_null.p)]
                 for r in t.top_m])
    tested = [e for e in t.components if e.tested]
    n_close = sum(e.closes_gap for e in tested)
    per = table(["component", "ICA part alone", "matched-null part", "ICA − null (paired)", "z", "p (one-sided)",
                 f"Holm (α = {t.alpha:g})", f"closes ≥ {t.min_share:.0%} of the gap"],
                [_component_row(e) for e in tested]) if tested else ""
    untested = {e.not_tested_because for e in t.components if not e.tested}
    lines = [
        f"{t.loss_name} on {c.held_out} ({t.n_sequences} windows, {t.n_documents} documents, {t.n_positions:,} scored "
        f"positions; divergence: {t.divergence_name}; the layers after the hook run as `{c.route}`; "
        f"{c.seconds:.0f} s). Loss recovered by the SAE (SAELens): **{t.loss_recovered:.1%}** (clean "
        f"{t.saelens_clean_loss:.4f}, spliced {t.saelens_spliced_loss:.4f}, zero {t.saelens_zero_loss:.4f} over "
        f"{t.saelens_positions:,} predictions); on the analysed positions only: {t.analysed_loss_recovered:.1%}. "
        f"The SAE's error against a random one of the same norm: divergence ratio **{t.divergence_ratio:.2f}×**.",
        "", splice, ""]
    if t.top_m:
        lines += [f"Top-m add-back against baselines at equal variance, each set ordered on {t.fit_documents} "
                  f"documents and scored on the other {t.score_documents} (± standard errors over those documents):",
                  "", top, ""]
    lines += [f"Per component: {n_close} of {len(tested)} tested components close at least {t.min_share:.0%} of the "
              f"gap alone and beat their matched null after Holm's correction. Tested: {t.test_rule}."
              + (" Not tested: " + "; ".join(sorted(untested)) + f" ({k - len(tested)} components)." if untested
                 else ""), ""]
    if per:
        lines += [per, ""]
    return "\n".join(lines + [HOW_TO_READ, ""])


def causal_line(c: CausalResult) -> str:
    """The causal tests in one line: the splice, the random-error baseline, the per-component count and the
    largest top-m add-back against its nulls."""
    t = c.table
    head = (f"causal ({c.held_out}): {t.loss_name} clean {t.clean_loss:.3f}, SAE spliced {t.spliced_loss:.3f}, zero "
            f"{t.zero_loss:.3f} (loss recovered {t.loss_recovered:.1%} as SAELens computes it, "
            f"{t.analysed_loss_recovered:.1%} on the analysed positions); the SAE's error moves the output "
            f"{t.divergence_ratio:.1f}× as much as a random one of its norm; the whole {len(t.order)}-subspace closes "
            f"{t.subspace_gap_closed.share:.1%} of the spliced gap; "
            f"{sum(e.closes_gap for e in t.components)} of {len(t.tested)} tested components close it beyond their "
            "matched null (Holm)")
    if not t.top_m:
        return head
    b = t.top_m[-1]
    v = b.versus_null
    return head + (f"; top {b.m} ICA components {b.ica.share:.1%} vs PCA {b.pca.share:.1%} and matched null "
                   f"{b.null_mean:.1%} (95% of {t.null_draws} draws in [{b.null_low:.1%}, {b.null_high:.1%}]) at equal "
                   f"variance, ICA − null {v.difference:+.1%} ± {v.se:.1%} (p {v.p:.2g})")
