"""The completeness grid in markdown: report.md's section and the README's generated blocks, from one
:class:`~darkmatter.analysis.injection.CompletenessResult` (so the two can never disagree)."""

from __future__ import annotations

from darkmatter.analysis.injection import CompletenessResult
from darkmatter.pipeline.report.mdtable import table


def completeness_markdown(c: CompletenessResult) -> str:
    """The detection limit per firing rate, every cell of the grid, and the runs (the null run last)."""
    g, top = c.grid, max(c.grid_shares)
    limits = table(["firing rate", "kept in ≥ 90% from a variance share of", "recovered in ≥ 90% from"],
                   [[f"{x.rate:.1%}", f"> {top:.2%} (the grid's largest)" if x.kept is None else f"{x.kept:.2%}",
                     f"> {top:.2%}" if x.recovered is None else f"{x.recovered:.2%}"] for x in c.limits])
    cells = table(["firing rate", "variance share", "documents", "direction", "injected", "recovered", "kept",
                   "why not kept"],
                  [[f"{x.rate:.1%}", f"{x.share:.2%}", x.spread, x.kind, x.trials, x.recovered, x.kept,
                    ", ".join(f"{k} {v}" for k, v in sorted(x.reasons.items(), key=lambda kv: -kv[1]))]
                   for x in c.cells])
    runs = table(["run", "arm", "k", "reproducible", "candidates", "of them not an injected feature", "seconds"],
                 [[x.run, x.arm, x.k, x.n_reproducible, x.n_candidates, x.other_candidates, f"{x.seconds:.0f}"]
                  for x in c.runs + ([c.null] if c.null else [])])
    return "\n".join([
        f"{c.statement}.", "",
        f"Each of {g['runs']} runs adds synthetic sparse features to the activations before the SAE (log-normal "
        "magnitudes, non-negative, at mutually orthogonal directions), then reruns the whole search — k sweep, "
        "restarts, matched control, floor test, the candidate rule — on x' − SAE(x'). A feature is *recovered* "
        f"when a component lies at |cos| ≥ {g['found_cos']} to its direction and *kept* when that component is a "
        f"candidate. Variance shares are of the residual's total variance ({c.residual_variance:.4g}). "
        + ("The null run (run −1) searches a norm-matched surrogate of the residual with nothing injected (every "
           "token keeps its norm and document, directions at random): its candidates are false ones."
           if c.null else "No null run (`--completeness-null false`): this run counts no false candidates.")
        + f" {c.seconds:.0f} s in all.",
        "", limits, "", cells, "", runs, ""])
