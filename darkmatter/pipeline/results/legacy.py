"""Results files of older schemas, read in today's shape (the README's ``docs/runs`` snapshots come
from runs too long to redo).

Schema 7 holds each top-m baseline under its name (``TopM.baselines``, ``CausalTable.baseline_draws``)
where schema 6 had one field per set (``pca``, ``pca_parts``, ``null``, ``null_mean``, ``null_low``,
``null_high``, ``versus_null``; ``null_draws``).
"""

from __future__ import annotations

from typing import Any

from darkmatter.analysis.directions import NULL, PCA

NAN = float("nan")


def _top_m_6(row: dict[str, Any]) -> dict[str, Any]:
    """A schema-6 top-m row in schema 7's shape. Schema 6 kept no standard error of the null draws'
    mean and no paired test against PCA: NaN and None."""
    if "baselines" in row:
        return row
    pca, versus = row["pca"], row.get("versus_null")
    clusters = versus["clusters"] if versus else 0
    return {"m": row["m"], "variance": row["variance"], "ica": row["ica"], "baselines": {
        NULL: {"gap": {"share": row["null_mean"], "se": NAN, "clusters": clusters}, "draws": row["null"],
               "low": row.get("null_low", NAN), "high": row.get("null_high", NAN), "parts": NAN, "versus": versus},
        PCA: {"gap": pca, "draws": [pca["share"]], "low": pca["share"], "high": pca["share"],
              "parts": row["pca_parts"], "versus": None}}}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A results document (ica_dark_matter_results.json, its stamps removed) of schema 6 or later in
    today's shape; a later one is returned as it is.

    Args:
        data: the parsed JSON; changed in place and returned.
    """
    table = (data.get("causal") or {}).get("table")
    if table is not None and "null_draws" in table:
        table["top_m"] = [_top_m_6(r) for r in table["top_m"]]
        table["baseline_draws"] = {NULL: table.pop("null_draws"), PCA: 1}
    return data
