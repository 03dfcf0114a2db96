"""A new key statistic is one registration (pipeline/report/statistics.py): the built-in ones give
their values and nulls from the results document, and a dummy registered here appears in report.md's
key-figures table and the dashboard with no other file naming it."""

import re

import pytest

from darkmatter.pipeline.report import dashboard, statistics
from darkmatter.pipeline.report.markdown import report_markdown
from darkmatter.pipeline.report.readme import load
from darkmatter.pipeline.report.statistics import Statistic, registered_statistic
from darkmatter.pipeline.results import FeatureBank


@pytest.fixture(scope="module")
def planted():
    return load("planted")


def test_the_built_in_statistics_state_the_run_and_its_null(planted):
    rows = {row.name: row for row in statistics.rows(planted)}
    assert list(rows) == ["residual_kurtosis", "stable_components", "max_source_kurtosis", "mean_max_cos",
                          "candidates"]
    d, sim = planted.diagnostics, planted.similarity
    assert rows["residual_kurtosis"].value == f"{d.residual_excess_kurtosis.median:.3f}"
    assert rows["residual_kurtosis"].null == f"±{2 * d.kurtosis_standard_error_effective:.3f}"
    assert rows["stable_components"].value == f"{planted.ica.n_stable} of {planted.ica.k}"
    assert rows["stable_components"].null == f"{planted.noise_floor.control_n_stable} of {planted.ica.k}"
    assert float(rows["mean_max_cos"].value) == pytest.approx(sim.sets["ICA"].mean_max_abs_cos, abs=5e-4)
    assert float(rows["mean_max_cos"].null) == pytest.approx(sim.against_null.null_mean, abs=5e-4)  # over every draw
    assert "random rotations in the same whitened" in rows["mean_max_cos"].null_name
    assert rows["candidates"].value == str(len(planted.candidate_dark_matter_components))
    md = report_markdown(planted)
    section = md.split("## Key figures against their nulls")[1].split("\n## ")[0]
    assert len(re.findall(r"^\| ", section, re.M)) == 1 + len(rows)  # header + one row each


def test_a_registered_statistic_reaches_report_and_dashboard(planted, tmp_path):
    dummy = Statistic("dummy_k_squared", "k squared (a test statistic)", value=lambda r: str(r.ica.k ** 2),
                      null=lambda r: "4", null_name=lambda r: "k = 2, the smallest fit")
    with registered_statistic(dummy):
        md = report_markdown(planted)
        assert f"| k squared (a test statistic) | {planted.ica.k ** 2} | 4 | k = 2, the smallest fit |" in md
        bank = FeatureBank(k=planted.ica.k, n_tokens=1, description="", hook_name="h", note=None, neuronpedia=None,
                           loss_name=None, divergence_name=None, components=[])
        index = dashboard.render(bank, None, [], "t", key_figures=statistics.rows(planted))["index.html"]
        assert f"<td>k squared (a test statistic)</td><td class=\"num\">{planted.ica.k ** 2}</td>" in index
    assert "k squared" not in report_markdown(planted)
    with pytest.raises(ValueError, match="already registered"):
        statistics.register_statistic(statistics.statistics()[0])
