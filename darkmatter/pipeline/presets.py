"""Named instances of the config: the offline default, the GPT-2 reference run, planted data."""

from __future__ import annotations

from typing import get_args

from darkmatter.pipeline.config import Config, PresetName, with_values

PRESETS: dict[str, Config] = {
    "smollm2-135m-local": Config(),
    # the study at the size the detection limit asks for: 2M analysed tokens of the large corpus (its odd-numbered
    # documents hold 5.8M), so the effective-n rule lets k grow; two injection runs keep the grid affordable on CPUs
    "smollm2-135m-2m": with_values(Config(), dict(
        preset="smollm2-135m-2m", corpus="mixed-large", n_tokens=2_000_000, completeness_runs=2)),
    "gpt2-small-res-jb": with_values(Config(), dict(
        preset="gpt2-small-res-jb", model="gpt2", model_source="transformer_lens",
        hook_name="blocks.6.hook_resid_pre", sae_release="gpt2-small-res-jb", sae_id="blocks.6.hook_resid_pre",
        dataset="Skylion007/openwebtext", n_tokens=1_000_000, context_size=128, batch_size=32,
        neuronpedia_id="gpt2-small/6-res-jb")),
    "planted": with_values(Config(), dict(
        preset="planted", model="planted", model_source="planted", hook_name="planted", max_norm_ratio=None,
        n_tokens=100_000, sae_train_tokens=100_000, sae_train_samples=300_000, sae_expansion=1, sae_l0=2.0,
        causal_windows=64)),
}
assert set(PRESETS) == set(get_args(PresetName))
