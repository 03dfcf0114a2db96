"""The language-model downstream of the causal tests, checked against SAELens's own evaluation."""

import numpy as np
import pytest
import torch

from darkmatter.analysis import causal
from darkmatter.sources.models import load_model
from darkmatter.sources.saes import load_sae
from darkmatter.sources.splice import LMDownstream

from helpers import TINY_HOOK


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_sae_dir):
    model = load_model("local_hooked", str(tiny_model_dir), "cpu")
    sae = load_sae("cpu", path=tiny_sae_dir)
    rng = np.random.default_rng(0)
    windows = rng.integers(1, model.model.cfg.d_vocab, size=(6, 24))
    windows[:, 0] = model.bos_id
    return model, sae, windows


def test_the_prefix_cached_route_reproduces_the_model(setup):
    model, _, windows = setup
    down = LMDownstream(model, TINY_HOOK, 6, windows, "cpu")
    batch = next(down.batches())
    assert down.route == "start_at_layer"
    with torch.no_grad():
        whole = model.model(batch.tokens)
        assert torch.allclose(down.outputs(batch.x, batch), whole, atol=1e-4)
        down.route = "whole_model"  # the fallback gives the same logits
        assert torch.allclose(down.outputs(batch.x, batch), whole, atol=1e-4)


def test_splice_matches_saelens_get_recons_loss(setup):
    """Clean and spliced cross-entropy and KL agree with ``sae_lens.evals.get_recons_loss`` over the
    same positions (it splices every non-BOS token with ``ignore_tokens=[bos]``)."""
    from sae_lens.evals import get_recons_loss
    from sae_lens.training.activation_scaler import ActivationScaler

    model, sae, windows = setup
    down = LMDownstream(model, TINY_HOOK, 6, windows, "cpu", max_norm_ratio=None, batch_windows=4)

    def reconstruct(x):
        return sae.decode(sae.encode(x))

    t = causal.run_edits(down, reconstruct, [causal.Edit("clean", "clean"), causal.Edit("spliced", "spliced")])
    tokens = torch.as_tensor(windows)
    ref = get_recons_loss(sae, model.model, ActivationScaler(), tokens, compute_kl=True, compute_ce_loss=True,
                          ignore_tokens=[model.bos_id], hook_name=TINY_HOOK)
    # ours scores predictions made at positions 1..ctx-2 (position 0, BOS, is never edited)
    assert t["clean"].mean_loss == pytest.approx(float(ref["ce_loss_without_sae"][:, 1:].mean()), rel=1e-4)
    assert t["spliced"].mean_loss == pytest.approx(float(ref["ce_loss_with_sae"][:, 1:].mean()), rel=1e-4)
    assert t["spliced"].mean_divergence == pytest.approx(float(ref["kl_div_with_sae"][:, 1:-1].mean()), rel=1e-3)
    assert t["spliced"].mean_loss != pytest.approx(t["clean"].mean_loss, rel=1e-3)
    assert t["clean"].positions.sum() == 6 * 22
