"""The causal tests in markdown: report.md's section and the README's generated block, from one
:class:`~darkmatter.pipeline.results.CausalResult` (so the two can never disagree). The top-m table has
a column per baseline the result holds (``TopM.baselines``, whatever was registered when it ran)."""

from __future__ import annotations

import math

from darkmatter.analysis import directions
from darkmatter.analysis.causal import BaselineAddBack, CausalTable, ComponentEffect, GapClosed, PairedTest
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
    "halves; on the first, the parts of ICA and of every draw of every baseline are each ordered by their "
    "first-order effect on the loss (attribution patching); on the second, the first m ICA parts are added back "
    "against each baseline's first parts carrying *the same residual variance* (a baseline drawn at random: the "
    "mean and 95% range of its draws; ICA − baseline: the paired difference from the draws' mean, ± its standard "
    "error, p one-sided for ICA > baseline). ICA above its matched null means the ICA directions are where the "
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


def _draws(t: CausalTable, name: str, b: BaselineAddBack) -> int:
    return t.baseline_draws.get(name, len(b.draws))


def _baseline_head(t: CausalTable, name: str) -> str:
    n = t.baseline_draws.get(name, 1)
    return f"{name} (same variance)" if n == 1 else f"{name}: mean [95% range of {n}]"


def _baseline_cell(t: CausalTable, name: str, b: BaselineAddBack) -> str:
    if _draws(t, name, b) == 1:
        return f"{b.gap.share:+.1%} ({b.parts:.1f} parts)"
    return f"{b.gap.share:+.1%} [{b.low:+.1%}, {b.high:+.1%}]"


def _versus(v: PairedTest | None) -> str:
    return "–" if v is None else f"{v.difference:+.1%} ± {v.se:.1%} (p {_p(v.p)})"


def top_m_markdown(t: CausalTable) -> str:
    """The top-m table: per m, ICA's share of the gap and every baseline's at the same variance, then
    ICA − each baseline (paired, one-sided p; no column where no row has the test: a schema-6 snapshot
    kept it for the matched null only); "" without top-m rows."""
    if not t.top_m:
        return ""
    names = list(t.top_m[0].baselines)
    paired = [n for n in names if any(r.baselines[n].versus is not None for r in t.top_m)]
    head = ["m", "residual variance", "ICA", *[_baseline_head(t, n) for n in names],
            *[f"ICA − {n} (paired)" for n in paired]]
    return table(head, [[r.m, f"{r.variance:.3f}", _gap(r.ica),
                         *[_baseline_cell(t, n, r.baselines[n]) for n in names],
                         *[_versus(r.baselines[n].versus) for n in paired]] for r in t.top_m])


def _baseline_legend(t: CausalTable) -> str:
    """The baselines of the top-m table, each with its registry description (where still registered)."""
    names = list(t.top_m[0].baselines) if t.top_m else []
    known = {b.name: b.description for b in directions.baselines()}
    def one(name: str) -> str:
        n = t.baseline_draws.get(name, 1)
        return f"*{name}* ({n} draw{'' if n == 1 else 's'})" + (f": {known[name]}" if name in known else "")
    return "; ".join(one(n) for n in names)


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
    top = top_m_markdown(t)
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
                  f"documents and scored on the other {t.score_documents} (± standard errors over those documents). "
                  f"Baselines: {_baseline_legend(t)}.", "", top, ""]
    lines += [f"Per component: {n_close} of {len(tested)} tested components close at least {t.min_share:.0%} of the "
              f"gap alone and beat their matched null after Holm's correction. Tested: {t.test_rule}."
              + (" Not tested: " + "; ".join(sorted(untested)) + f" ({k - len(tested)} components)." if untested
                 else ""), ""]
    if per:
        lines += [per, ""]
    return "\n".join(lines + [HOW_TO_READ, ""])


def causal_line(c: CausalResult) -> str:
    """The causal tests in one line: the splice, the random-error baseline, the per-component count and the
    largest top-m add-back against every baseline (and ICA − the matched null)."""
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
    r = t.top_m[-1]

    def one(name: str, b: BaselineAddBack) -> str:
        n = _draws(t, name, b)
        return f"{name} {b.gap.share:.1%}" + (f" (95% of {n} draws in [{b.low:.1%}, {b.high:.1%}])" if n > 1 else "")

    v = r.baselines[directions.NULL].versus if directions.NULL in r.baselines else None
    return head + (f"; top {r.m} ICA components {r.ica.share:.1%} vs "
                   + ", ".join(one(name, b) for name, b in r.baselines.items()) + " at equal variance"
                   + (f", ICA − {directions.NULL} {v.difference:+.1%} ± {v.se:.1%} (p {v.p:.2g})" if v else ""))
