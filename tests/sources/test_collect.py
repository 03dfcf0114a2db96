"""Token selection at the hook and the SAE running statistics."""

import numpy as np
import pytest
import torch

from darkmatter.errors import DarkMatterError
from darkmatter.sources.base import RowLog
from darkmatter.sources.collect import SAERunningStats, hook_rows
from darkmatter.sources.models import LoadedModel


class FakeModel:
    """run_with_cache returning preset activations: every token norm 1, token (1, 3) norm 100."""

    def run_with_cache(self, tokens, names_filter, stop_at_layer):
        acts = torch.zeros(*tokens.shape, 4)
        acts[..., 0] = 1.0
        acts[1, 3, 0] = 100.0 if tokens.shape[0] > 1 else 1.0
        return None, {names_filter[0]: acts}


def test_hook_rows_drop_bos_and_massive_activations():
    model = LoadedModel(FakeModel(), tokenizer=None, bos_id=0, d_model=4, n_layers=2, description="fake")
    windows = np.array([[0, 5, 6, 7, 8], [0, 5, 6, 7, 8]], dtype=np.int32)
    log = RowLog()
    (batch,) = hook_rows(model, iter(windows), "blocks.0.hook_resid_pre", 0, batch_size=2,
                         device="cpu", n_tokens=7, max_norm_ratio=10.0, log=log)
    assert batch.n_massive == 1 and len(batch.x) == 7 and len(log.windows) == 2
    assert batch.n_bos == 2  # both windows' BOS lie before the last token taken
    assert [1, 3] not in batch.index.tolist() and [0, 0] not in batch.index.tolist()
    (batch,) = hook_rows(model, iter(windows), "blocks.0.hook_resid_pre", 0, 2, "cpu", 8)
    assert len(batch.x) == 8 and batch.n_massive == 0
    (batch,) = hook_rows(model, iter(windows), "blocks.0.hook_resid_pre", 0, 2, "cpu", 3)
    assert batch.n_bos == 1  # the cut falls inside the first window: the second's BOS is not counted


def test_hook_rows_say_when_the_text_runs_out():
    model = LoadedModel(FakeModel(), tokenizer=None, bos_id=0, d_model=4, n_layers=2, description="fake")
    windows = np.array([[0, 5, 6, 7, 8], [0, 5, 6, 7, 8]], dtype=np.int32)
    with pytest.raises(DarkMatterError, match="text ran out after 7 of 9 tokens"):
        list(hook_rows(model, iter(windows), "blocks.0.hook_resid_pre", 0, 2, "cpu", 9, max_norm_ratio=10.0))


def test_sae_running_stats_match_direct_formulas():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((300, 5)) + 3.0, dtype=torch.float32)
    feats = torch.tensor(np.where(rng.random((300, 8)) < 0.2, rng.exponential(size=(300, 8)), 0.0),
                         dtype=torch.float32)
    feats[:, 7] = 0.0  # a dead feature
    x_hat = x + 0.1 * torch.tensor(rng.standard_normal((300, 5)), dtype=torch.float32)
    stats = SAERunningStats(d_sae=8, d_model=5)
    for s in range(0, 300, 128):
        stats.update(x[s:s + 128], x_hat[s:s + 128], feats[s:s + 128])
    out = stats.finish()
    x64, r64 = x.double().numpy(), (x - x_hat).double().numpy()
    assert out.fvu == pytest.approx((r64 ** 2).sum() / ((x64 - x64.mean(0)) ** 2).sum(), rel=1e-6)
    assert out.mse == pytest.approx((r64 ** 2).mean(), rel=1e-6)
    assert out.mean_l0 == pytest.approx(float((feats != 0).sum(1).double().mean()))
    assert out.dead_features == 1
    fm = stats.feature_moments.numpy()
    np.testing.assert_allclose(fm[2], (feats.double() ** 2).sum(0).numpy(), rtol=1e-9)
