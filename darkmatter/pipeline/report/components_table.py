"""components.csv and components.parquet (step 06): the feature bank as a data table, one row per
ICA component, with the columns of components.md's table (:func:`markdown._bank_table`) as plain
values (numbers unformatted, lists joined) plus the bank's other per-component scalars.

Columns (in order; ``None``/NaN where the bank has no value):

==============================  ===============================================================
component                       the component's index (ica.json order)
candidate                       the candidate rule's verdict (bool)
not_candidate_because           its reasons when not a candidate, joined with "; " ("" if one)
excess_kurtosis                 of its source over the analysed tokens (``source_excess_kurtosis``)
kurtosis_se                     that kurtosis' standard error
stability                       reappearance frequency over document splits
stability_status                stable / unstable / undetermined
stable, settled, above_floor    ica.json's verdicts (bool)
artifact                        where its strongest activations concentrate ("" when nowhere)
max_abs_cos                     max |cos| to the SAE decoder rows (raw)
max_abs_cos_projected           the same projected into the whitened subspace
novelty                         1 − max_abs_cos
rate_above, rate_below          share of tokens whose source is above +2 / below −2
linear_share, lives_in          the linear/nonlinear split (None where it did not run)
add_back_share                  gap closed by adding it back (None where not tested)
null_add_back_share             the same for its matched null
nearest_sae_feature             index of the nearest SAE decoder row (None without one)
nearest_sae_cos                 its signed cos
nearest_sae_neuronpedia         its Neuronpedia id (GPT-2 presets), else None
top_tokens                      the four most frequent tokens among its top activations, "; "-joined
top_context                     the context of its strongest activation ("" without one)
==============================  ===============================================================
"""

from __future__ import annotations

from typing import Any

from darkmatter.pipeline.results import FeatureBank

#: The table's columns, in order (the module docstring says what each holds).
COLUMNS = ("component", "candidate", "not_candidate_because", "excess_kurtosis", "kurtosis_se", "stability",
           "stability_status", "stable", "settled", "above_floor", "artifact", "max_abs_cos", "max_abs_cos_projected",
           "novelty", "rate_above", "rate_below", "linear_share", "lives_in", "add_back_share", "null_add_back_share",
           "nearest_sae_feature", "nearest_sae_cos", "nearest_sae_neuronpedia", "top_tokens", "top_context")

#: Separator of list-valued cells (tokens, reasons): tokens may hold commas, rarely semicolons.
JOIN = "; "


def components_rows(bank: FeatureBank) -> list[dict[str, Any]]:
    """One dict per component (keys :data:`COLUMNS`), in the bank's component order."""
    rows = []
    for c in bank.components:
        e = c.causal
        near = c.nearest_sae_features[0] if c.nearest_sae_features else None
        rows.append({
            "component": c.component, "candidate": c.candidate,
            "not_candidate_because": JOIN.join(c.not_candidate_because),
            "excess_kurtosis": c.source_excess_kurtosis, "kurtosis_se": c.kurtosis_se, "stability": c.stability,
            "stability_status": c.stability_status, "stable": c.stable, "settled": c.settled,
            "above_floor": c.above_floor, "artifact": c.artifact, "max_abs_cos": c.max_abs_cos,
            "max_abs_cos_projected": c.max_abs_cos_projected, "novelty": c.novelty, "rate_above": c.rate_above,
            "rate_below": c.rate_below, "linear_share": c.linear_share, "lives_in": c.lives_in,
            "add_back_share": e.add_back.share if e is not None and e.add_back is not None else None,
            "null_add_back_share": e.null_add_back.share if e is not None and e.null_add_back is not None else None,
            "nearest_sae_feature": near.feature if near else None, "nearest_sae_cos": near.cos if near else None,
            "nearest_sae_neuronpedia": near.neuronpedia if near else None,
            "top_tokens": JOIN.join(t for t, _ in c.token_histogram[:4]),
            "top_context": c.top[0].context if c.top else ""})
    return rows


def components_frame(bank: FeatureBank) -> Any:
    """The feature bank as a ``pandas.DataFrame`` [k rows × len(:data:`COLUMNS`)], one row per
    component in the bank's order; integer columns with missing values are pandas' nullable ``Int64``,
    float columns with missing values hold NaN.

    Returns:
        pandas.DataFrame with columns :data:`COLUMNS`.
    """
    import pandas as pd

    frame = pd.DataFrame(components_rows(bank), columns=list(COLUMNS))
    frame["nearest_sae_feature"] = frame["nearest_sae_feature"].astype("Int64")
    for col in ("linear_share", "add_back_share", "null_add_back_share", "nearest_sae_cos"):
        frame[col] = frame[col].astype("float64")
    return frame
