"""Named instances of the config: the offline default, the GPT-2 reference run, planted data."""

from __future__ import annotations

from typing import get_args

from darkmatter.pipeline.config import Config, PresetName, with_values

PRESETS: dict[str, Config] = {
    "smollm2-135m-local": Config(),
    # the study at the size the detection limit asks for: 2M analysed tokens of the large corpus (its odd-numbered
    # documents hold 5.8M), so the effective-n rule lets k grow. On 2 CPU cores every k costs 11 FastICA fits and as
    # many for the control, in each search: k is capped at 100 and the grid is one injection run (plus the null
    # run); on a GPU pass --max-components none --completeness-runs 3
    "smollm2-135m-2m": with_values(Config(), dict(
        preset="smollm2-135m-2m", corpus="mixed-large", n_tokens=2_000_000, max_components=50,
        completeness_runs=1)),
    "gpt2-small-res-jb": with_values(Config(), dict(
        preset="gpt2-small-res-jb", model="gpt2", model_source="transformer_lens",
        hook_name="blocks.6.hook_resid_pre", sae_release="gpt2-small-res-jb", sae_id="blocks.6.hook_resid_pre",
        dataset="Skylion007/openwebtext", n_tokens=1_000_000, context_size=128, batch_size=32,
        neuronpedia_id="gpt2-small/6-res-jb")),
    # planted data with real text's structure at moderate strength: ~500 documents of ~200 rows (log-normal
    # lengths) so documents are the resampling unit, a heavy-tailed background (per-document noise scale σ 0.5,
    # per-row σ 0.3: excess kurtosis ≈ 8.7 per noise coordinate), features confined to 30% of the documents,
    # and 2 first-position artifacts in the residual. ICA still finds the 16 withheld features at |cos| > 0.98
    # (k = 48..64, 0 false discoveries; measured on the oracle residual of the 100,000 analysed rows).
    "planted": with_values(Config(), dict(
        preset="planted", model="planted", model_source="planted", hook_name="planted", max_norm_ratio=None,
        n_tokens=100_000, sae_train_tokens=100_000, sae_train_samples=300_000, sae_expansion=1, sae_l0=2.0,
        causal_windows=64, planted_doc_length=200, planted_doc_scale_sigma=0.5, planted_token_scale_sigma=0.3,
        planted_topic_share=0.3, planted_positional_features=2)),
}
assert set(PRESETS) == set(get_args(PresetName))
