"""The one run configuration, its presets, and the shared command line.

Every numbered script accepts the same flags. Step 01 resolves them against a
preset and records the result in ``outputs/config.json``; later steps read that
record back, apply only the flags the user actually typed, and refuse a flag
that contradicts a field an *earlier* step already used (mixing two runs in one
folder would give silently wrong numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from darkmatter.errors import DarkMatterError

SMOLLM2_MODEL = "SmolLM2-135M-Instruct"

#: Which step first uses a field. A script may change fields owned by itself or
#: a later step (a "tweak and rerun"); fields owned by an earlier step are fixed.
STEP_OF_FIELD: dict[str, int] = {}


def _f(default: Any, help: str, step: int = 0, **kw: Any) -> Any:
    """A config field whose help text becomes ``--help``; ``step`` owns it (0: free)."""
    return field(default=default, metadata={"help": help, "step": step}, **kw)


@dataclass(frozen=True)
class Config:
    """Everything that defines one ICA dark-matter run."""

    preset: str = _f("smollm2-135m-local", "named preset the other fields start from", 1)
    outputs: str = _f("outputs", "folder where every step reads and writes its files")
    model: str = _f(SMOLLM2_MODEL, "model: a TransformerLens name, the bundled SmolLM2, "
                    "or a folder holding hooked_config.json (+ weights.pt, tokenizer files)", 1)
    model_source: str = _f("smollm2_gguf", "how to load the model: transformer_lens | "
                           "smollm2_gguf | local_hooked | planted (derived from --model when omitted)", 1)
    hook_name: str = _f("blocks.15.hook_resid_pre", "TransformerLens hook whose activations "
                        "the SAE reconstructs", 1)
    sae_release: str | None = _f(None, "SAELens release of a pretrained SAE", 1)
    sae_id: str | None = _f(None, "SAELens id inside --sae-release", 1)
    sae_path: str | None = _f(None, "local SAELens folder (cfg.json + sae_weights.safetensors); "
                              "with neither this nor --sae-release an SAE is trained", 1)
    dataset: str | None = _f(None, "Hugging Face dataset name, streamed", 1)
    dataset_column: str = _f("text", "text column of --dataset", 1)
    text_files: str | None = _f(None, "glob of local text files; replaces --dataset and the "
                                "bundled Python documentation", 1)
    context_size: int = _f(128, "tokens per window, BOS included", 1)
    prepend_bos: bool = _f(True, "prepend BOS to every window (as gpt2-small-res-jb was trained)", 1)
    max_norm_ratio: float | None = _f(10.0, "drop tokens whose activation norm exceeds this multiple "
                                      "of the batch median (attention-sink 'massive activations', Sun et "
                                      "al. 2024); none keeps every token", 1)
    seed: int = _f(42, "master seed: SAE training, subsamples, first ICA seed, baselines", 1)
    sae_arch: str = _f("topk", "architecture of a trained SAE (SAELens training SAE): "
                       "standard (ReLU + L1) | topk | batchtopk | jumprelu", 1)
    sae_expansion: int = _f(8, "d_sae / d_model of a trained SAE", 1)
    sae_l0: float = _f(32.0, "target L0 of a trained SAE: k for topk/batchtopk; the L1 or L0 "
                       "coefficient of standard/jumprelu is calibrated to hit it", 1)
    sae_train_tokens: int = _f(120_000, "activation tokens collected to train the SAE, from the "
                               "even-numbered documents (odd ones are analysed), so the two are disjoint", 1)
    sae_train_samples: int = _f(360_000, "samples the SAE trainer sees (epochs over the tokens)", 1)
    sae_lr: float = _f(1e-3, "Adam learning rate of SAE training", 1)
    sae_batch_size: int = _f(1024, "SAE training batch, in tokens", 1)
    neuronpedia_id: str | None = _f(None, "Neuronpedia model/SAE id, e.g. gpt2-small/6-res-jb", 1)
    planted_mode: str = _f("withheld", "planted dark matter: withheld (an oracle SAE knows all but "
                           "--planted-withheld features) | capacity (an SAE is trained with too few "
                           "latents or too low an L0)", 1)
    planted_d_model: int = _f(64, "planted: width of the activations", 1)
    planted_features: int = _f(128, "planted: true feature directions (more than d_model: superposition)", 1)
    planted_withheld: int = _f(16, "planted: features the oracle SAE does not know", 1)
    planted_p_fire: float = _f(0.01, "planted: probability that a feature fires on a token", 1)
    planted_magnitude_sigma: float = _f(0.3, "planted: sigma of the log-normal feature magnitudes", 1)
    planted_noise: float = _f(0.05, "planted: standard deviation of the Gaussian noise per dimension", 1)
    planted_threshold: float = _f(0.6, "planted: JumpReLU threshold of the oracle SAE", 1)
    n_tokens: int = _f(120_000, "tokens analysed (BOS positions excluded)", 2)
    n_components: int | None = _f(None, "ICA components k; default: PCA components for 90%% "
                                  "of residual variance, capped at --max-components", 4)
    max_components: int = _f(100, "cap on the automatic k", 4)
    ica_backend: str = _f("torch", "FastICA implementation: torch (darkmatter.ica_engine, the default: "
                          "stops once the identifiable components are stable; CPU or CUDA) | sklearn "
                          "(scikit-learn, the reference)", 4)
    ica_seeds: int = _f(3, "FastICA restarts (seed, seed+1, ...) for the stability check", 4)
    ica_max_iter: int = _f(200, "FastICA iteration cap", 4)
    ica_tol: float = _f(1e-6, "FastICA tolerance (scikit-learn's 1e-4 can stop at a mixed solution)", 4)
    ica_max_tokens: int | None = _f(None, "fit ICA on a random subsample of this many tokens "
                                    "(sources are still computed for every token)", 4)
    ica_resample: float = _f(0.5, "share of the fit tokens each FastICA restart after the first "
                             "sees, a fresh random subset per seed (ICASSO-style): stable then means "
                             "reproducible across data, not only across initialisations; 1 = same rows", 4)
    stable_cos: float = _f(0.9, "matched |cos| across seeds for a component to count as stable", 4)
    gaussian_control: bool = _f(True, "also run ICA on a Gaussian surrogate with the residual's "
                                "covariance (same tokens, k and seeds): the noise floor of kurtosis "
                                "and stability", 4)
    n_top_contexts: int = _f(20, "top and bottom activating contexts kept per component", 6)
    context_window: int = _f(10, "tokens of context shown either side of the marked token", 6)
    device: str = _f("auto", "torch device: auto | cpu | cuda")
    batch_size: int = _f(16, "windows per model forward pass")
    sae_chunk_size: int = _f(4096, "token rows per SAE encode/decode and per streamed chunk")

    @property
    def layer(self) -> int:
        """Block index of ``hook_name`` (``blocks.L.*``). Raises DarkMatterError otherwise."""
        m = re.match(r"blocks\.(\d+)\.", self.hook_name)
        if not m:
            raise DarkMatterError(
                f"hook {self.hook_name!r} is not a per-block hook (blocks.L.hook_...); "
                "pass --hook-name like blocks.6.hook_resid_pre")
        return int(m.group(1))

    @property
    def planted(self) -> bool:
        """True for planted activations (no model: see :mod:`darkmatter.planted`)."""
        return self.model_source == "planted"

    def planted_spec(self):
        """The :class:`darkmatter.planted.PlantedSpec` of this run (seeded by ``seed``)."""
        from darkmatter.planted import PlantedSpec

        return PlantedSpec(d_model=self.planted_d_model, n_features=self.planted_features,
                           n_withheld=self.planted_withheld if self.planted_mode == "withheld" else 0,
                           p_fire=self.planted_p_fire, magnitude_sigma=self.planted_magnitude_sigma,
                           noise_std=self.planted_noise, seed=self.seed,
                           oracle_threshold=self.planted_threshold)

    @property
    def trains_sae(self) -> bool:
        """True when no pretrained or local SAE is named, so step 01 trains one."""
        return self.sae_release is None and self.sae_path is None

    def resolved_device(self) -> str:
        """``cuda`` when ``device == "auto"`` and CUDA is available, else the given device."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


for _fld in fields(Config):
    STEP_OF_FIELD[_fld.name] = _fld.metadata["step"]

PRESETS: dict[str, Config] = {
    "gpt2-small-res-jb": Config(
        preset="gpt2-small-res-jb",
        model="gpt2",
        model_source="transformer_lens",
        hook_name="blocks.6.hook_resid_pre",
        sae_release="gpt2-small-res-jb",
        sae_id="blocks.6.hook_resid_pre",
        dataset="Skylion007/openwebtext",
        n_tokens=1_000_000,
        context_size=128,
        batch_size=32,
        neuronpedia_id="gpt2-small/6-res-jb",
    ),
    "smollm2-135m-local": Config(),
    "planted": Config(
        preset="planted",
        model="planted",
        model_source="planted",
        hook_name="planted",
        max_norm_ratio=None,
        n_tokens=100_000,
        sae_train_tokens=100_000,
        sae_train_samples=300_000,
        sae_expansion=1,
        sae_l0=2.0,
        max_components=100,
    ),
}

ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _none_or(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "auto", "") else kind(text)

    return parse


def build_parser(description: str) -> argparse.ArgumentParser:
    """The shared command line: one flag per Config field.

    Omitted flags are absent from the namespace (``argparse.SUPPRESS``), so a typed
    flag, even ``--n-components auto`` (None), can be told from an omitted one, which
    the config-contradiction check needs.
    """
    parser = argparse.ArgumentParser(description=description)
    for fld in fields(Config):
        text = str(fld.type)
        if "bool" in text:
            conv: Any = _parse_bool
        elif "int" in text:
            conv = _none_or(int) if "None" in text else int
        elif "float" in text:
            conv = _none_or(float) if "None" in text else float
        else:
            conv = _none_or(str) if "None" in text else str
        help_text = fld.metadata["help"] + (f" (default {fld.default})" if fld.name != "preset" else
                                            f"; one of {', '.join(PRESETS)}")
        parser.add_argument(_flag(fld.name), dest=fld.name, type=conv, default=argparse.SUPPRESS,
                            help=help_text)
    return parser


_EXCLUSIVE = (("sae_path", "sae_release"), ("text_files", "dataset"))


def _apply_overrides(base: Config, given: dict[str, Any]) -> Config:
    """Apply typed flags to ``base``, keeping mutually exclusive sources consistent.

    Raises:
        DarkMatterError: two exclusive sources typed together, or invalid values.
    """
    for a, b in _EXCLUSIVE:
        if given.get(a) is not None and given.get(b) is not None:
            raise DarkMatterError(f"{_flag(a)} and {_flag(b)} exclude each other; pass one")
    changed = {k for k, v in given.items() if getattr(base, k) != v}
    cfg = replace(base, **given)
    if "model" in changed and "model_source" not in given:
        cfg = replace(cfg, model_source=infer_model_source(cfg.model))
    if "sae_path" in changed and cfg.sae_path is not None:
        cfg = replace(cfg, sae_release=None, sae_id=None)
    if "sae_release" in changed and cfg.sae_release is not None:
        cfg = replace(cfg, sae_path=None)
    if "text_files" in changed and cfg.text_files is not None:
        cfg = replace(cfg, dataset=None)
    if "dataset" in changed and cfg.dataset is not None:
        cfg = replace(cfg, text_files=None)
    if {"model", "sae_release", "sae_id", "sae_path", "hook_name"} & changed and \
            "neuronpedia_id" not in given:
        cfg = replace(cfg, neuronpedia_id=None)
    validate(cfg)
    return cfg


def infer_model_source(model: str) -> str:
    """``local_hooked`` for a folder with hooked_config.json, ``smollm2_gguf`` for the bundled
    SmolLM2, else ``transformer_lens`` (``HookedTransformer.from_pretrained``)."""
    from pathlib import Path

    if (Path(model) / "hooked_config.json").is_file():
        return "local_hooked"
    if model == SMOLLM2_MODEL:
        return "smollm2_gguf"
    if model == "planted":
        return "planted"
    return "transformer_lens"


def validate(cfg: Config) -> None:
    """Raise DarkMatterError on values that cannot make a run."""
    problems = []
    if cfg.model_source not in ("transformer_lens", "smollm2_gguf", "local_hooked", "planted"):
        problems.append(f"--model-source {cfg.model_source!r} is unknown")
    if (cfg.sae_release is None) != (cfg.sae_id is None):
        problems.append("--sae-release and --sae-id go together")
    if cfg.context_size < 2:
        problems.append("--context-size must be at least 2")
    for name in ("n_tokens", "batch_size", "sae_chunk_size", "ica_seeds", "max_components",
                 "sae_expansion", "sae_l0", "sae_train_tokens", "sae_train_samples", "sae_batch_size"):
        if getattr(cfg, name) < 1:
            problems.append(f"{_flag(name)} must be positive")
    for name in ("n_components", "ica_max_tokens", "max_norm_ratio"):
        value = getattr(cfg, name)
        if value is not None and value <= (1 if name == "max_norm_ratio" else 0):
            problems.append(f"{_flag(name)} must be {'above 1' if name == 'max_norm_ratio' else 'positive'} "
                            "or none")
    if cfg.ica_max_iter < 1 or cfg.ica_tol <= 0 or not 0 < cfg.stable_cos <= 1 or not 0 < cfg.ica_resample <= 1:
        problems.append("--ica-max-iter must be ≥ 1, --ica-tol > 0, --stable-cos and --ica-resample in (0, 1]")
    if cfg.ica_backend not in ("sklearn", "torch"):
        problems.append(f"--ica-backend {cfg.ica_backend!r}: choose sklearn or torch")
    if cfg.sae_arch not in ARCHITECTURES:
        problems.append(f"--sae-arch {cfg.sae_arch!r} is unknown; choose one of {', '.join(ARCHITECTURES)}")
    if cfg.planted:
        if cfg.planted_mode not in ("withheld", "capacity"):
            problems.append(f"--planted-mode {cfg.planted_mode!r}: choose withheld or capacity")
        if cfg.sae_release or cfg.sae_path:
            problems.append("planted activations bring their own SAE: drop --sae-release/--sae-path")
        try:
            cfg.planted_spec()
        except ValueError as exc:
            problems.append(f"planted: {exc}")
    else:
        _ = cfg.layer
    if problems:
        raise DarkMatterError("; ".join(problems))


def resolve_new(args: argparse.Namespace) -> Config:
    """Step 01: start from the preset, apply typed flags."""
    given = {k: v for k, v in vars(args).items() if k in STEP_OF_FIELD}
    preset = given.get("preset", Config.preset)
    if preset not in PRESETS:
        raise DarkMatterError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return _apply_overrides(PRESETS[preset], given)


def resolve_recorded(args: argparse.Namespace, recorded: dict[str, Any], step: int,
                     fix: str) -> Config:
    """Steps 02-08: the recorded config plus typed flags this step may change.

    Raises DarkMatterError when a typed flag contradicts a field owned by an
    earlier step; ``fix`` names what to rerun.
    """
    base = Config(**{k: v for k, v in recorded.items() if k in STEP_OF_FIELD})
    given = {k: v for k, v in vars(args).items() if k in STEP_OF_FIELD}
    clashes = [f"{_flag(k)} {v!r} (this run has {getattr(base, k)!r})"
               for k, v in given.items()
               if k != "outputs" and 0 < STEP_OF_FIELD[k] < step and getattr(base, k) != v]
    if clashes:
        raise DarkMatterError(
            f"flags contradict the run recorded in {base.outputs}/config.json: "
            f"{'; '.join(clashes)}. {fix}, or pass --outputs DIR for a separate run")
    return _apply_overrides(base, given)


def run_id(cfg: Config, step: int) -> str:
    """A fingerprint of every field owned by steps 1..``step``.

    Each step stamps its JSON output with its own ``run_id``; a later step compares
    the stamps of its inputs with the current config, so files left over from a
    differently configured run are refused instead of silently mixed. The stamp is
    deterministic: rerunning a step with the same config rewrites identical bytes.
    """
    owned = {k: v for k, v in cfg.to_dict().items() if 0 < STEP_OF_FIELD[k] <= step}
    return hashlib.sha1(json.dumps(owned, sort_keys=True).encode()).hexdigest()[:12]
