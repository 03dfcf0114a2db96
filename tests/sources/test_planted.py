"""Planted dark matter as a source: reproducible rows, the oracle SAE, and the ActivationSource
interface (rows, built-in SAE, ground truth, row contexts)."""

import dataclasses

import numpy as np
import pytest
import torch

from darkmatter.analysis import directions
from darkmatter.analysis.groundtruth import missed_by_decoder
from darkmatter.analysis.resampling import design_effect
from darkmatter.sources import planted
from darkmatter.sources.base import ActivationSource, Resume

from helpers import oracle_residual

SMALL = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=8, magnitude_sigma=0.3, seed=42)


def test_rows_are_reproducible_and_streams_are_distinct():
    x, f = planted.sample(SMALL, "analysis", 10_000)  # spans two blocks
    rows = np.array([0, 5, 8191, 8192, 9999])
    np.testing.assert_array_equal(planted.features_at(SMALL, "analysis", rows), f[rows])
    again = np.concatenate([a for a, _ in planted.rows(SMALL, "analysis", 3000, start=7000)])
    np.testing.assert_array_equal(again, x[7000:10_000])
    x_train, _ = planted.sample(SMALL, "train", 100)
    assert not np.allclose(x_train, x[:100])
    # numpy ignores trailing zeros in seed lists; the streams must still differ from plain seed 42
    d = SMALL.directions()
    assert np.abs(d @ directions.random_unit(48, 32, 42).T).max() < 0.9
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    assert abs((f > 0).mean() - SMALL.p_fire) < 0.002


def test_spec_rejects_impossible_values():
    with pytest.raises(ValueError, match="n_withheld"):
        planted.PlantedSpec(n_features=4, n_withheld=5)
    with pytest.raises(ValueError, match="p_fire"):
        planted.PlantedSpec(p_fire=0)
    with pytest.raises(ValueError, match="need documents"):
        planted.PlantedSpec(topic_share=0.5)
    with pytest.raises(ValueError, match="must not exceed topic_share"):
        planted.PlantedSpec(doc_length=10, p_fire=0.2, topic_share=0.1)
    with pytest.raises(ValueError, match="doc_length"):
        planted.PlantedSpec(doc_length=1)


def test_oracle_sae_knows_exactly_the_non_withheld_directions():
    sae = planted.oracle_sae(SMALL)
    W = sae.W_dec.detach().numpy()
    assert W.shape == (48 - 8, 32)
    truth = SMALL.directions()
    assert set(missed_by_decoder(W, truth)) == set(SMALL.withheld())
    x, f, r = oracle_residual(SMALL, 20_000)
    fvu = (r ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert 0.1 < fvu < 0.6  # a realistic SAE: it explains most, not all, of the variance


def test_planted_source_speaks_the_source_interface():
    source = planted.PlantedSource(SMALL, "withheld")
    assert isinstance(source, ActivationSource)
    hook = source.hook()
    assert hook.d_model == 32 and hook.layer is None and "disjoint" in hook.split
    batches = list(source.rows("analysis", 10_000, 16, "cpu"))
    x = torch.cat([b.x for b in batches]).numpy()
    index = np.concatenate([b.index for b in batches])
    np.testing.assert_array_equal(x, planted.sample(SMALL, "analysis", 10_000)[0])
    np.testing.assert_array_equal(index[:, 0], np.arange(10_000))
    sae = source.builtin_sae("cpu")
    truth = source.ground_truth(sae.W_dec.detach().numpy())
    np.testing.assert_array_equal(truth.dark, SMALL.withheld())
    assert source.unembed() is None and source.note()
    read = source.row_contexts(np.array([3, 9999]), index, None, 10, set(SMALL.withheld().tolist()))
    f = planted.features_at(SMALL, "analysis", np.array([9999]))[0]
    ctx = read(9999)
    assert ctx.row == 9999 and (ctx.context == "(no feature fired)") == (not f.any())
    if f.any():
        assert ctx.token.lstrip("f").rstrip("*") == str(int(np.argmax(f)))


def test_capacity_mode_has_no_builtin_sae_and_reads_dark_features_off_the_decoder():
    source = planted.PlantedSource(SMALL, "capacity")
    assert source.builtin_sae("cpu") is None
    truth = SMALL.directions()
    W_dec = truth[:40]  # knows the first 40 features exactly
    assert source.ground_truth(W_dec).dark.tolist() == list(range(40, 48))
    with pytest.raises(ValueError, match="mode"):
        planted.PlantedSource(SMALL, "nope")


# ---------------------------------------------------------------- documents (real text's structure)
#: The planted preset's document structure on a small spec.
DOCS = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=8, seed=42, doc_length=200, doc_scale_sigma=0.5,
                           token_scale_sigma=0.3, topic_share=0.3, positional_features=2)


def _cold_caches():
    for cached in (planted._lengths, planted._layout, planted._traits):
        cached.cache_clear()


@pytest.mark.parametrize("mean", [20, 200])
def test_document_lengths_have_the_requested_mean(mean):
    spec = planted.PlantedSpec(doc_length=mean)
    n = 20_000 * mean  # about 20,000 documents
    doc, pos = planted.documents(spec, "analysis", np.array([n - 1]))
    assert abs(n / (doc[0] + 1) / mean - 1) < 0.04  # measured 1.009 for both (SE ≈ 0.9%)
    doc, pos = planted.documents(spec, "analysis", np.arange(50_000))
    new = np.flatnonzero(np.diff(doc)) + 1  # a document's first row has position 1, then +1 per row
    assert doc[0] == 0 and pos[0] == 1 and (pos[new] == 1).all() and (np.diff(doc) <= 1).all()
    same = np.setdiff1d(np.arange(1, 50_000), new)
    assert (pos[same] == pos[same - 1] + 1).all()
    lengths = np.bincount(doc)[:-1]  # the last document may run past the range
    assert lengths.min() >= 1 and np.median(lengths) < 0.75 * mean  # log-normal: a long right tail (0.65)
    train, _ = planted.documents(spec, "train", np.arange(50_000))
    assert not np.array_equal(train, doc)
    iid = planted.documents(planted.PlantedSpec(), "analysis", np.arange(5, 9))
    assert iid[0].tolist() == [5, 6, 7, 8] and iid[1].tolist() == [0, 0, 0, 0]


def test_documents_and_rows_do_not_depend_on_the_split(monkeypatch):
    """Rows [a, b) two ways: in one piece or in two, with cold or warm caches, in other row blocks,
    and through the source with resume: the same documents, positions and rows."""
    a, c, b = 5_000, 12_345, 23_000
    x, f = planted.sample(DOCS, "analysis", b)
    doc, pos = planted.documents(DOCS, "analysis", np.arange(b))
    _cold_caches()
    pieces = [planted.documents(DOCS, "analysis", np.arange(lo, hi)) for lo, hi in ((c, b), (a, c))]
    np.testing.assert_array_equal(np.concatenate([pieces[1][0], pieces[0][0]]), doc[a:b])
    np.testing.assert_array_equal(np.concatenate([pieces[1][1], pieces[0][1]]), pos[a:b])
    _cold_caches()
    xa = np.concatenate([xb for xb, _ in planted.rows(DOCS, "analysis", b - a, start=a)])
    np.testing.assert_array_equal(xa, x[a:b])
    np.testing.assert_array_equal(planted.features_at(DOCS, "analysis", np.arange(b - 1, a - 1, -1)), f[a:b][::-1])
    monkeypatch.setattr(planted, "BLOCK", 1000)  # documents are laid out apart from the row blocks
    _cold_caches()
    np.testing.assert_array_equal(planted.documents(DOCS, "analysis", np.arange(a, b))[0], doc[a:b])
    monkeypatch.undo()
    source = planted.PlantedSource(DOCS)
    index = np.concatenate([r.index for r in source.rows("analysis", b, 16, "cpu")])
    np.testing.assert_array_equal(index, np.stack([doc, pos], axis=1))
    resumed = list(source.rows("analysis", b, 16, "cpu", resume=Resume(batches=1, rows=planted.BLOCK)))
    np.testing.assert_array_equal(np.concatenate([r.index for r in resumed]), index[planted.BLOCK:])
    np.testing.assert_array_equal(torch.cat([r.x for r in resumed]).numpy(), x[planted.BLOCK:])


@pytest.mark.parametrize("doc_sigma, token_sigma", [(0.0, 0.0), (0.0, 0.3), (0.3, 0.0), (0.3, 0.3)])
def test_the_background_is_a_gaussian_scale_mixture(doc_sigma, token_sigma):
    """Excess kurtosis of the background x − Σ f_i d_i per coordinate: 3·E[s⁴]/E[s²]² − 3 =
    3·exp(4(σ_doc² + σ_token²)) − 3 for log-normal scales; its variance stays noise_std²."""
    spec = planted.PlantedSpec(d_model=16, n_features=4, n_withheld=0, doc_length=20, doc_scale_sigma=doc_sigma,
                               token_scale_sigma=token_sigma)
    x, f = planted.sample(spec, "analysis", 100_000)
    background = (x - f.astype(np.float64) @ spec.directions()).ravel()
    expected = 3 * np.exp(4 * (doc_sigma ** 2 + token_sigma ** 2)) - 3  # 0, 1.30, 1.30, 3.16
    got = ((background - background.mean()) ** 4).mean() / background.var() ** 2 - 3
    # 5,000 documents: the estimate's spread over seeds is ±5% at 1.3 and ±10% at 3.2 (wider with larger σs);
    # measured 0.00, 1.29, 1.20, 2.95
    assert got == pytest.approx(expected, rel=0.1, abs=0.05)
    assert background.std() == pytest.approx(spec.noise_std, rel=0.05)


def test_a_feature_fires_only_in_its_topic_documents():
    spec = dataclasses.replace(DOCS, positional_features=0)
    n = 200_000
    x, f = planted.sample(spec, "analysis", n)
    doc, _ = planted.documents(spec, "analysis", np.arange(n))
    _, topics = planted.document_traits(spec, "analysis", doc)
    assert topics is not None and topics.mean() == pytest.approx(0.3, abs=0.02)
    fired = f > 0
    assert not (fired & ~topics).any()  # never outside its documents
    assert fired.mean() == pytest.approx(spec.p_fire, rel=0.1)  # the overall rate stays p_fire
    starts = np.flatnonzero(np.diff(doc, prepend=-1))
    long = np.bincount(doc) >= 100  # documents long enough to show a feature's topic

    def share_of_documents(fired: np.ndarray) -> float:
        """Mean over features of the share of long documents where the feature fires at all."""
        return float((np.add.reduceat(fired.astype(np.int64), starts, axis=0)[long] > 0).mean())

    # ≈ 0.3 · P(≥ 1 firing | topic), and P ≈ 0.97 at 100 rows (measured 0.301 of the long documents)
    assert 0.27 < share_of_documents(fired) <= topics[starts][long].mean() + 0.01
    iid = planted.sample(dataclasses.replace(spec, topic_share=1.0), "analysis", n)[1] > 0
    assert share_of_documents(iid) > 0.6  # the same rate without topics spreads over most documents (0.86)


def test_positional_features_fire_only_at_positions_one_and_two():
    n = 50_000
    x, f = planted.sample(DOCS, "analysis", n)
    doc, pos = planted.documents(DOCS, "analysis", np.arange(n))
    assert f.shape == (n, 50) and DOCS.positional().tolist() == [48, 49]
    fired = f[:, 48:] > 0
    first = np.isin(pos, [1, 2])
    assert not fired[~first].any()
    assert fired[first].mean() == pytest.approx(planted.POSITIONAL_P, abs=0.05)
    assert (f[first, :48] > 0).mean() < 0.02  # the ordinary features ignore positions (rate p_fire 0.01)
    source = planted.PlantedSource(DOCS)
    W_dec = source.builtin_sae("cpu").W_dec.detach().numpy()
    truth = source.ground_truth(W_dec)
    assert truth.directions.shape == (50, 32)
    assert truth.positional.tolist() == [48, 49] and truth.dark.tolist() == DOCS.withheld().tolist()
    assert {48, 49} <= set(missed_by_decoder(W_dec, truth.directions).tolist())  # in the residual
    # a trained SAE that misses them: they are still not dark
    capacity = planted.PlantedSource(DOCS, "capacity").ground_truth(truth.directions[:40])
    assert capacity.dark.tolist() == list(range(40, 48)) and capacity.positional.tolist() == [48, 49]


def test_units_are_documents_and_contexts_name_the_active_features():
    source = planted.PlantedSource(DOCS)
    n = 10_000
    index = np.concatenate([r.index for r in source.rows("analysis", n, 16, "cpu")])
    units, name = source.units(index, None)
    assert name == "document" and units.dtype == np.int64
    np.testing.assert_array_equal(units, planted.documents(DOCS, "analysis", np.arange(n))[0])
    iid = planted.PlantedSource(SMALL)
    iid_index = np.concatenate([r.index for r in iid.rows("analysis", 100, 16, "cpu")])
    units, name = iid.units(iid_index, None)
    assert name == "row" and units.tolist() == list(range(100))
    f = planted.features_at(DOCS, "analysis", np.arange(n))
    dark = set(DOCS.withheld().tolist())
    positional_row = int(np.flatnonzero(f[:, 48:].any(1))[0])
    busy_row = int(np.flatnonzero((f[:, :48] > 0).sum(1) >= 2)[-1])
    read = source.row_contexts(np.array([positional_row, busy_row]), index, None, 10, dark)
    for row in (positional_row, busy_row):
        ctx = read(row)
        named = {int(w.split(":")[0].lstrip("f").rstrip("*@")) for w in ctx.context.split(" (")[0].split()}
        assert named == set(np.flatnonzero(f[row]).tolist()) and ctx.row == row
        assert ctx.context.endswith(f"(document {index[row, 0]}, position {index[row, 1]})")
        assert ctx.token.lstrip("f").rstrip("*@") == str(int(np.argmax(f[row])))
    assert "@:" in read(positional_row).context and index[positional_row, 1] in (1, 2)


def test_documents_give_a_design_effect_of_the_dark_sources_kurtosis():
    """The dark features' projections of the residual (≈ their ICA sources): documents make their
    excess kurtosis vary by document (shared scales and topics), iid rows do not."""
    n = 60_000
    doc, _ = planted.documents(DOCS, "analysis", np.arange(n))
    deff = {}
    for name, spec in (("documents", DOCS), ("iid", SMALL)):
        _, _, r = oracle_residual(spec, n)
        sources = r @ spec.directions()[spec.withheld()].T
        deff[name], _ = design_effect(sources, doc, seed=0)
    assert deff["documents"] > 3 and deff["iid"] < 1.5  # measured 4.9 and 1.08


def test_the_planted_readout_is_blind_to_positional_features():
    """The causal tests' known answer: each readout vector reads its own dark feature and nothing
    along the other dark features or the positional ones (which are in the residual too)."""
    truth = planted.PlantedSource(DOCS).ground_truth(np.zeros((1, 32)))
    B, read = planted.readout(truth)
    assert read.tolist() == truth.dark[::2].tolist() and len(truth.positional) == 2
    np.testing.assert_allclose(truth.directions[read] @ B, np.eye(len(read)), atol=1e-10)
    others = np.concatenate([np.setdiff1d(truth.dark, read), truth.positional])
    assert np.abs(truth.directions[others] @ B).max() < 1e-10


def test_held_out_sequences_start_at_documents_and_cluster_by_them():
    """The planted readout's held-out sequences, like text windows, start at document starts (at most two
    per document), so their standard errors can be clustered by document."""
    spec = planted.PlantedSpec(doc_length=200)
    starts, units = planted.held_out_starts(spec, 20_000, 64, 128)
    doc, pos = planted.documents(spec, "analysis", starts)
    assert len(starts) == 64 and (starts >= 20_000).all() and (np.diff(starts) >= 128).all()
    np.testing.assert_array_equal(doc, units)
    first = np.r_[True, units[1:] != units[:-1]]
    assert (pos[first] == 1).all() and (pos[~first] == 129).all()  # a second sequence continues its document
    assert np.bincount(np.unique(units, return_counts=True)[1]).tolist()[3:] == []  # ≤ 2 per document
    assert len(np.unique(units)) >= 32
    down = planted.PlantedSource(spec).downstream(
        planted.PlantedSource(spec).ground_truth(np.zeros((1, spec.d_model))), 64, 20_000, "cpu")
    np.testing.assert_array_equal(down.units, units)
