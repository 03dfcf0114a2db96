"""components.csv and components.parquet (step 06): the feature bank as a data table that pandas reads
back, one row per component, with the bank's values."""

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from darkmatter.pipeline import table
from darkmatter.pipeline.report.components_table import COLUMNS, JOIN, components_frame
from darkmatter.pipeline.results import FeatureBank


@pytest.fixture(scope="module")
def run_dir(small_planted_run):
    return small_planted_run


def bank_json(run_dir) -> dict:
    data = json.loads((run_dir / "feature_bank.json").read_text())
    return {k: v for k, v in data.items() if k not in ("schema_version", "run_id")}


def test_step_06_declares_and_writes_both_tables(run_dir):
    assert {"components.csv", "components.parquet"} <= set(table.step(6).writes)
    assert table.producer("components.parquet") == table.producer("components.md")
    assert (run_dir / "components.csv").is_file() and (run_dir / "components.parquet").is_file()


@pytest.mark.parametrize("reader", [pd.read_csv, pd.read_parquet], ids=["csv", "parquet"])
def test_the_tables_hold_one_row_per_component_with_the_banks_values(run_dir, reader):
    bank = bank_json(run_dir)
    frame = reader(run_dir / ("components.csv" if reader is pd.read_csv else "components.parquet"))
    assert list(frame.columns) == list(COLUMNS) and len(frame) == bank["k"] == len(bank["components"]) > 0
    for (_, row), c in zip(frame.iterrows(), bank["components"]):
        assert row["component"] == c["component"] and bool(row["candidate"]) == c["candidate"]
        for col, key in (("excess_kurtosis", "source_excess_kurtosis"), ("stability", "stability"),
                         ("novelty", "novelty"), ("max_abs_cos", "max_abs_cos"), ("rate_above", "rate_above"),
                         ("max_abs_cos_projected", "max_abs_cos_projected"), ("kurtosis_se", "kurtosis_se")):
            assert row[col] == pytest.approx(c[key], rel=1e-12), col
        for col in ("stable", "settled", "above_floor"):
            assert bool(row[col]) == c[col], col
        assert row["stability_status"] == c["stability_status"]
        assert (row["not_candidate_because"] if isinstance(row["not_candidate_because"], str) else "") == \
            JOIN.join(c["not_candidate_because"])
        if c["linear_share"] is None:
            assert np.isnan(row["linear_share"])
        else:
            assert row["linear_share"] == pytest.approx(c["linear_share"], rel=1e-12)
        near = c["nearest_sae_features"][0] if c["nearest_sae_features"] else None
        if near:
            assert row["nearest_sae_feature"] == near["feature"]
            assert row["nearest_sae_cos"] == pytest.approx(near["cos"], rel=1e-12)
        top = c["top"][0]["context"] if c["top"] else ""
        assert (row["top_context"] if isinstance(row["top_context"], str) else "") == top


def test_the_parquet_file_is_the_frame_of_the_typed_bank(run_dir):
    bank = TypeAdapter(FeatureBank).validate_python(bank_json(run_dir))
    expected = components_frame(bank)
    assert len(expected) == bank.k and expected["nearest_sae_feature"].dtype == "Int64"
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "components.parquet"), expected)
