"""The one place the causal tests rely on TransformerBridge's structure (``splice.bridge_suffix``),
checked on a tiny Llama (SmolLM2's architecture) booted offline: a TransformerLens release that
moves the bridge's blocks, final norm or unembedding fails here, by name, rather than silently
sending the SmolLM2 runs down the slower whole-model route."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darkmatter.sources.models import SMOLLM2_HF_NAME, LoadedModel
from darkmatter.sources.splice import LMDownstream, bridge_suffix

N_LAYERS, D_MODEL = 3, 32
CHANGED = ("TransformerLens {version} changed what darkmatter.sources.splice.bridge_suffix relies on ({what}): "
           "update bridge_suffix for this release (until then the SmolLM2 causal tests take the whole-model route)")


@pytest.fixture(scope="module")
def bridge(tiny_model_dir):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=N_LAYERS,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    hf = LlamaForCausalLM(cfg).eval()  # a config and a pre-loaded model: no hub call
    model = TransformerBridge.boot_transformers(SMOLLM2_HF_NAME, hf_model=hf, tokenizer=tok, device="cpu")
    return LoadedModel(model=model, tokenizer=tok, bos_id=int(tok.bos_token_id), d_model=D_MODEL,
                       n_layers=N_LAYERS, description="tiny Llama bridge")


def changed(what: str) -> str:
    import transformer_lens

    return CHANGED.format(version=getattr(transformer_lens, "__version__", "?"), what=what)


def test_the_bridge_still_has_the_parts_the_route_runs(bridge):
    parts = bridge_suffix(bridge.model)
    assert parts is not None, changed("TransformerBridge's blocks, ln_final and unembed")
    assert len(parts.blocks) == N_LAYERS, changed(f"{len(parts.blocks)} blocks for {N_LAYERS} decoder layers")
    assert bridge_suffix(object()) is None  # anything else: no route


@pytest.mark.parametrize("layer", [1, 2])
def test_hf_layers_route_is_chosen_and_equals_the_whole_model(bridge, layer):
    rng = np.random.default_rng(0)
    windows = rng.integers(1, len(bridge.tokenizer), size=(4, 16))
    windows[:, 0] = bridge.bos_id
    down = LMDownstream(bridge, f"blocks.{layer}.hook_resid_pre", layer, windows, "cpu", batch_windows=4)
    batch = next(down.batches())
    assert down.route == "hf_layers", changed(f"the blocks from {layer} on no longer reproduce the clean logits")
    edited = batch.x + torch.randn(batch.x.shape, generator=torch.Generator().manual_seed(1))
    ours = down.outputs(edited, batch)
    down.route = "whole_model"
    whole = down.outputs(edited, batch)
    assert ours.shape == (4, 16, len(bridge.tokenizer))
    change = float((whole - down.outputs(batch.x, batch)).abs().max())
    assert change > 0.01  # the edit moves the logits, so the match below is not the clean pass again
    assert float((ours - whole).abs().max()) <= 1e-5 * max(float(whole.abs().max()), 1.0)
