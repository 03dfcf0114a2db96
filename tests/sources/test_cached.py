"""Cached activations as a source: a SAELens activation-cache folder (a saved Hugging Face dataset
with a column named after the hook and token_ids), read without loading a model."""

import json

import numpy as np
import pytest
import torch

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import cli
from darkmatter.sources.base import ActivationSource, RowLog
from darkmatter.sources.cached import CachedSource

from helpers import TINY_D_MODEL, TINY_HOOK

N_WINDOWS, CTX = 60, 16


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tiny_model_dir):
    """The layout SAELens's CacheActivationsRunner writes: one row per window, Array2D activations
    under the hook's name and token_ids, saved with save_to_disk. Activations are those of the tiny
    model, so they carry real structure; BOS (id 0) opens every window."""
    from datasets import Array2D, Dataset, Features, Sequence, Value

    from darkmatter.sources.models import load_model

    model = load_model("local_hooked", str(tiny_model_dir), "cpu")
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 500, size=(N_WINDOWS, CTX)).astype(np.int32)
    tokens[:, 0] = model.bos_id
    acts = model.activations(torch.as_tensor(tokens, dtype=torch.long), TINY_HOOK, 6).numpy()
    features = Features({TINY_HOOK: Array2D(shape=(CTX, TINY_D_MODEL), dtype="float32"),
                         "token_ids": Sequence(Value(dtype="int32"), length=CTX)})
    folder = tmp_path_factory.mktemp("cache")
    Dataset.from_dict({TINY_HOOK: acts, "token_ids": tokens}, features=features).save_to_disk(str(folder))
    return folder, acts, tokens


def test_reads_the_saelens_cache_layout(cache_dir, tiny_model_dir):
    folder, acts, tokens = cache_dir
    source = CachedSource(str(folder), TINY_HOOK, tokenizer=str(tiny_model_dir))
    assert isinstance(source, ActivationSource)
    hook = source.hook()
    assert hook.d_model == TINY_D_MODEL and hook.bos_id == 0 and "with token ids" in hook.text
    log = RowLog()
    rows = list(source.rows("analysis", 100, 8, "cpu", log))
    x = torch.cat([b.x for b in rows]).numpy()
    index = np.concatenate([b.index for b in rows])
    assert len(x) == 100 and (index[:, 1] > 0).all()  # BOS positions dropped
    np.testing.assert_array_equal(x, acts[index[:, 0], index[:, 1]])
    assert sum(b.n_bos for b in rows) == 7  # windows 0..6 reached
    read = source.row_contexts(np.arange(3), index, np.stack(log.windows), 3, set())
    assert "[[" in read(0).context and read(0).token == source.decode(int(tokens[index[0, 0], index[0, 1]]))


def test_split_keeps_training_and_analysis_windows_apart(cache_dir):
    folder, _, _ = cache_dir
    source = CachedSource(str(folder), TINY_HOOK, split=True)
    train = RowLog()
    list(source.rows("train", 45, 4, "cpu", train))
    analysis = RowLog()
    list(source.rows("analysis", 45, 4, "cpu", analysis))
    assert {w.tobytes() for w in train.windows}.isdisjoint({w.tobytes() for w in analysis.windows})


def test_the_pipeline_runs_on_the_cache_without_a_model(cache_dir, tiny_sae_dir, tiny_model_dir, tmp_path):
    folder, _, _ = cache_dir
    out = tmp_path / "run"
    assert cli.run_all(["--activations", str(folder), "--hook-name", TINY_HOOK, "--sae-path", str(tiny_sae_dir),
                        "--tokenizer", str(tiny_model_dir), "--n-tokens", "800", "--n-components", "4",
                        "--completeness-runs", "0", "--outputs", str(out)]) == 0
    setup = json.loads((out / "setup.json").read_text())
    assert setup["source_kind"] == "cached" and setup["hook"]["d_model"] == TINY_D_MODEL
    bank = json.loads((out / "feature_bank.json").read_text())
    assert "no logit lens" in bank["note"] and "[[" in bank["components"][0]["top"][0]["context"]
    assert "no causal tests" in bank["note"] and not (out / "causal.json").exists()
    assert not (out / "causal_topm.png").exists()  # no causal tests, no top-m figure
    unit = json.loads((out / "ica.json").read_text())["resampling_unit"]
    headline = " ".join(json.loads((out / "ica_dark_matter_results.json").read_text())["headline"])
    assert unit == "document" or f"by {unit}s, not documents" in headline  # stability by rows is said
    assert np.load(out / "tokens.npy").shape[1] == CTX


def test_bad_caches_are_one_line_errors(tmp_path):
    with pytest.raises(DarkMatterError, match="no such file"):
        CachedSource(str(tmp_path / "missing.npy"), "h")
    np.save(tmp_path / "ints.npy", np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(DarkMatterError, match="expected float"):
        CachedSource(str(tmp_path / "ints.npy"), "h").hook()
    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(DarkMatterError, match="`activation_tokens`"):
        CachedSource(str(tmp_path / "x.npy"), "h", tokens_path=str(tmp_path / "none.npy")).hook()
    np.save(tmp_path / "t.npy", np.zeros(5, dtype=np.int32))
    with pytest.raises(DarkMatterError, match="`activation_tokens`"):
        CachedSource(str(tmp_path / "x.npy"), "h", tokens_path=str(tmp_path / "t.npy")).hook()
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 3)), b=np.zeros(2))
    with pytest.raises(DarkMatterError, match="npz"):
        CachedSource(str(tmp_path / "two.npz"), "h").hook()
    np.save(tmp_path / "rows.npy", np.ones((10_000, 3), dtype=np.float32))
    split = CachedSource(str(tmp_path / "rows.npy"), "h", split=True)
    with pytest.raises(DarkMatterError, match="ran out after 1,808 .*every other block of 8192 rows"):
        list(split.rows("analysis", 5000, 8, "cpu"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DarkMatterError, match="saved dataset"):
        CachedSource(str(tmp_path / "folder"), "h").hook()


def test_document_ids_of_cached_activations_become_the_resampling_units(tmp_path):
    """--activation-documents: one id per window (or per row) of the cache; without it, rows are the units
    of 2-D activations and the run says so."""
    from darkmatter.sources.cached import CachedSource

    x = np.random.default_rng(0).standard_normal((40, 8, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "docs.npy", np.repeat(np.arange(10), 4))  # 10 documents of 4 windows
    src = CachedSource(str(tmp_path / "x.npy"), "h", documents_path=str(tmp_path / "docs.npy"))
    index = np.array([[w, p] for w in range(40) for p in range(8)])
    units, name = src.units(index, None)
    assert name == "document" and units.tolist() == np.repeat(np.arange(10), 32).tolist()
    np.save(tmp_path / "bad.npy", np.arange(7))
    with pytest.raises(DarkMatterError, match="one id per window or one per row"):
        CachedSource(str(tmp_path / "x.npy"), "h", documents_path=str(tmp_path / "bad.npy")).units(index, None)
    flat = tmp_path / "flat.npy"
    np.save(flat, x.reshape(-1, 4))
    units, name = CachedSource(str(flat), "h").units(np.c_[np.arange(320), np.zeros(320, int)], None)
    assert name == "row" and len(np.unique(units)) == 320
