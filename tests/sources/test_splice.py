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


@pytest.fixture(scope="module")
def separated(setup):
    """Windows with documents separated by BOS inside them, as the held-out stream has them."""
    model, sae, windows = setup
    w = windows.copy()
    w[:, 9] = model.bos_id
    w[::2, 17] = model.bos_id
    return w


class _Store:
    """The one method of SAELens's ActivationsStore that ``get_downstream_reconstruction_metrics`` calls."""

    def __init__(self, tokens):
        self.tokens = tokens

    def get_batch_tokens(self, n):
        return self.tokens[:n]


def test_loss_recovered_is_saelens_own(setup, separated):
    """SAELens's CE loss recovered, as ``sae_lens.evals.get_downstream_reconstruction_metrics`` computes
    it (x̂ at every non-BOS token, zero at every position, predictions made at non-BOS tokens), equals
    ours; the analysed-positions version (massive activations left clean) differs."""
    from sae_lens.evals import get_downstream_reconstruction_metrics
    from sae_lens.training.activation_scaler import ActivationScaler

    model, sae, _ = setup
    down = LMDownstream(model, TINY_HOOK, 6, separated, "cpu", max_norm_ratio=1.2, batch_windows=4)

    def reconstruct(x):
        return sae.decode(sae.encode(x))

    ica = causal.Parts("ICA", np.zeros((1, 32)), np.zeros((32, 1)), np.zeros(32), np.arange(1))
    t = causal.run_edits(down, reconstruct, causal.splice_edits(ica, 0))
    sae.cfg.metadata.hook_name = TINY_HOOK
    ref = get_downstream_reconstruction_metrics(sae, model.model, _Store(torch.as_tensor(separated)),
                                                ActivationScaler(), compute_kl=True, compute_ce_loss=True,
                                                n_batches=1, eval_batch_size_prompts=len(separated),
                                                ignore_tokens=[model.bos_id])
    ours = causal.loss_recovered(t["saelens clean"], t["saelens spliced"], t["saelens zero"])
    assert ours == pytest.approx(ref["ce_loss_score"], rel=1e-4)
    assert t["saelens clean"].mean_loss == pytest.approx(ref["ce_loss_without_sae"], rel=1e-5)
    assert t["saelens spliced"].mean_loss == pytest.approx(ref["ce_loss_with_sae"], rel=1e-5)
    assert t["saelens zero"].mean_loss == pytest.approx(ref["ce_loss_with_ablation"], rel=1e-5)
    not_bos = separated != model.bos_id
    assert t["saelens clean"].positions.sum() == not_bos[:, :-1].sum()
    analysed = causal.loss_recovered(t["clean"], t["spliced"], t["zero"])
    assert t["clean"].positions.sum() < t["saelens clean"].positions.sum() and analysed != pytest.approx(ours)


def test_the_loss_gradient_is_the_models(setup, separated):
    """The prefix-cached route's ∂L/∂x equals the whole model's, and predicts a small edit's loss change."""
    model, _, _ = setup
    down = LMDownstream(model, TINY_HOOK, 6, separated, "cpu", batch_windows=6)
    batch = next(down.batches())
    g = down.loss_gradient(batch.x, batch)
    down.route = "whole_model"
    assert torch.allclose(down.loss_gradient(batch.x, batch), g, atol=1e-5)
    v = torch.randn(batch.x.shape, generator=torch.Generator().manual_seed(0)) * batch.splice[..., None]
    ref = down.reference(down.outputs(batch.x, batch), batch)

    def loss(acts):
        return float((down.score(down.outputs(acts, batch), batch, ref)[0] * batch.score).sum())

    eps = 1e-3
    assert (loss(batch.x + eps * v) - loss(batch.x - eps * v)) / (2 * eps) == pytest.approx(float((g * v).sum()),
                                                                                              rel=1e-2)


def test_held_out_windows_of_a_model_source_start_at_document_starts(tiny_model_dir, text_glob):
    from darkmatter.sources.model_source import ModelSource, TextSpec
    from darkmatter.sources.text import documents, pieces

    text = TextSpec(text_files=text_glob, context_size=24)
    source = ModelSource("local_hooked", str(tiny_model_dir), TINY_HOOK, text, None, "cpu")
    down = source.downstream(None, 12, 30, "cpu")
    docs = [d for d in documents(text_glob) if d.strip()]
    tok = source.model.tokenizer
    units = down.units
    # the first held-out document is the first that starts after the 30 windows (× 23 tokens) step 02 read
    lengths = [len([t for p in pieces(d) for t in tok(p, add_special_tokens=False)["input_ids"]]) + 1
               for d in docs[:units[0] + 1]]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    assert starts[units[0]] >= 30 * 23 > starts[units[0] - 1] and "12 windows from" in down.description
    assert len(units) == 12 and (np.diff(units) >= 0).all() and np.bincount(units).max() <= 2
    assert len(np.unique(units)) >= 6
    for i, (w, u) in enumerate(zip(down.windows, units)):
        assert w[0] == source.model.bos_id
        head = [t for p in pieces(docs[u]) for t in tok(p, add_special_tokens=False)["input_ids"]][:46]
        second = i > 0 and units[i - 1] == u
        expect = head[23:46] if second else head[:23]
        assert list(w[1:1 + len(expect)]) == expect
    batch = next(down.batches(np.array([2, 5])))
    assert list(batch.unit) == [units[2], units[5]]


def test_the_chunked_scores_are_the_log_softmax_cross_entropy_and_kl():
    """LMDownstream.score (Δ = log Σ p e^d, 16 positions at a time) against float64 log-softmax forms,
    for small and large edits and a window length that is not a multiple of the chunk."""
    from darkmatter.analysis.causal import Batch
    from darkmatter.sources.splice import LMDownstream

    gen = torch.Generator().manual_seed(0)
    b, ctx, vocab = 3, 21, 300
    clean = 4 * torch.randn(b, ctx, vocab, generator=gen)
    out = torch.cat([clean + s * torch.randn(b, ctx, vocab, generator=gen) for s in (1e-3, 0.1, 3.0)])
    tokens = torch.randint(0, vocab, (b, ctx), generator=gen)
    batch = Batch(x=torch.zeros(b, ctx, 4), splice=torch.ones(b, ctx, dtype=torch.bool),
                  score=torch.ones(b, ctx, dtype=torch.bool), tokens=tokens, unit=np.arange(b))
    down = LMDownstream.__new__(LMDownstream)
    nll, kl = down.score(out, batch, down.reference(clean, batch))
    logp = torch.log_softmax(clean.double(), -1)
    q = torch.log_softmax(out.double(), -1).reshape(3, b, ctx, vocab)
    want_kl = (logp.exp() * (logp - q)).sum(-1).reshape(-1, ctx)
    want_nll = -q[:, :, :-1].gather(-1, tokens[:, 1:, None].expand(3, -1, -1, -1)).squeeze(-1)
    assert torch.allclose(kl.double(), want_kl, rtol=1e-4, atol=1e-6)
    assert float(want_kl.reshape(3, -1).mean(1)[0]) < 1e-5 < float(want_kl.reshape(3, -1).mean(1)[2])
    assert torch.allclose(nll.reshape(3, b, ctx)[:, :, :-1].double(), want_nll, rtol=1e-5, atol=1e-5)
    assert float(nll.reshape(3, b, ctx)[:, :, -1].abs().max()) == 0.0
