"""How typed flags become a Config, and the run_id stamps that keep runs apart.

Step 01 starts from the preset and applies the flags the user typed. Later steps read
``config.json`` back and apply typed flags too, but a flag owned by an *earlier* step (the
step table says which) must repeat the recorded value: mixing two runs in one folder would
give silently wrong numbers, so a contradiction stops with the owning step's script to rerun.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.config import FIELD_SECTION, SECTIONS, SMOLLM2_MODEL, Config, flat, get, with_values
from darkmatter.pipeline.flags import flag
from darkmatter.pipeline.presets import PRESETS

_EXCLUSIVE = (("sae_path", "sae_release"), ("text_files", "dataset"), ("activations", "text_files"),
              ("activations", "dataset"))


def infer_source(model: str) -> str:
    """``local_hooked`` for a folder with hooked_config.json, ``smollm2_gguf`` for the bundled
    SmolLM2, ``planted`` for "planted", else ``transformer_lens``."""
    if (Path(model) / "hooked_config.json").is_file():
        return "local_hooked"
    if model == SMOLLM2_MODEL:
        return "smollm2_gguf"
    if model == "planted":
        return "planted"
    return "transformer_lens"


def _apply(base: Config, given: dict[str, Any]) -> Config:
    """Apply typed flags to ``base``, keeping mutually exclusive sources consistent.

    Raises:
        DarkMatterError: two exclusive sources typed together, or invalid values.
    """
    for a, b in _EXCLUSIVE:
        if given.get(a) is not None and given.get(b) is not None:
            raise DarkMatterError(f"{flag(a)} and {flag(b)} exclude each other; pass one")
    changed = {k for k, v in given.items() if get(base, k) != v}
    cfg = with_values(base, given)
    clear: dict[str, Any] = {}
    if "activations" in changed and cfg.source.activations is not None and "model_source" not in given:
        clear["model_source"] = "cached"
    elif "model" in changed and "model_source" not in given:
        clear["model_source"] = infer_source(cfg.source.model)
    if clear.get("model_source", cfg.source.model_source) == "cached":
        clear.update(text_files=None, dataset=None)  # cached rows need no text
    if "sae_path" in changed and cfg.source.sae_path is not None:
        clear.update(sae_release=None, sae_id=None)
    if "sae_release" in changed and cfg.source.sae_release is not None:
        clear["sae_path"] = None
    if "text_files" in changed and cfg.source.text_files is not None:
        clear["dataset"] = None
    if "dataset" in changed and cfg.source.dataset is not None:
        clear["text_files"] = None
    if {"model", "sae_release", "sae_id", "sae_path", "hook_name"} & changed and \
            "neuronpedia_id" not in given:
        clear["neuronpedia_id"] = None
    cfg = with_values(cfg, clear)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise DarkMatterError on values that cannot make a run."""
    s, problems = cfg.source, []
    if (s.sae_release is None) != (s.sae_id is None):
        problems.append("--sae-release and --sae-id go together")
    if s.context_size < 2:
        problems.append("--context-size must be at least 2")
    for name in ("n_tokens", "batch_size", "sae_chunk_size", "ica_seeds", "sae_expansion", "sae_l0",
                 "sae_train_tokens", "sae_train_samples", "sae_batch_size", "n_top_contexts", "null_draws",
                 "causal_null_draws"):
        if get(cfg, name) < 1:
            problems.append(f"{flag(name)} must be positive")
    d = cfg.run.device
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", d):
        problems.append(f"--device {d!r} is not a torch device here: auto, cpu, cuda or cuda:N")
    elif d.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            problems.append(f"--device {d}: this machine has no CUDA device; pass --device cpu (or auto)")
        elif ":" in d and int(d.split(":")[1]) >= torch.cuda.device_count():
            problems.append(f"--device {d}: there are {torch.cuda.device_count()} CUDA devices here")
    if cfg.ica.ica_seeds < 2:
        problems.append("--ica-seeds must be at least 2: stability is measured across restarts")
    for name in ("causal_windows", "context_window"):
        if get(cfg, name) < 0:
            problems.append(f"{flag(name)} must be 0 or more")
    for name, low in (("n_components", 0), ("max_components", 0), ("ica_max_tokens", 0), ("max_norm_ratio", 1)):
        value = get(cfg, name)
        if value is not None and value <= low:
            problems.append(f"{flag(name)} must be {'above 1' if low else 'positive'} or none")
    i = cfg.ica
    if i.ica_max_iter < 1 or i.ica_tol <= 0 or not 0 < i.stable_cos <= 1 or not 0 < i.ica_resample <= 1:
        problems.append("--ica-max-iter must be ≥ 1, --ica-tol > 0, --stable-cos and --ica-resample in (0, 1]")
    if i.samples_per_parameter <= 0:
        problems.append("--samples-per-parameter must be positive")
    if s.model_source == "cached" and s.activations is None:
        problems.append("--model-source cached needs --activations PATH")
    if s.model_source != "cached" and s.activations is not None:
        problems.append(f"--activations is read only by --model-source cached, not {s.model_source}: drop one")
    if s.activations is None and (s.activation_tokens is not None or s.tokenizer is not None):
        problems.append("--activation-tokens and --tokenizer describe --activations: pass it too, or drop them")
    if s.model_source == "planted":
        if s.sae_release or s.sae_path:
            problems.append("planted activations bring their own SAE: drop --sae-release/--sae-path")
        from darkmatter.sources.planted import PlantedSpec

        try:
            spec = PlantedSpec(**planted_spec_kwargs(cfg))
            if cfg.planted.planted_mode == "withheld" and len(spec.known()) == 0:
                problems.append("--planted-withheld must leave the oracle SAE at least one known feature "
                                f"(fewer than --planted-features {spec.n_features})")
        except ValueError as exc:
            problems.append(f"planted: {exc}")
    elif s.model_source != "cached":
        from darkmatter.sources.model_source import layer_of

        try:
            layer_of(s.hook_name)
        except DarkMatterError as exc:
            problems.append(str(exc))
    if problems:
        raise DarkMatterError("; ".join(problems))


def planted_spec_kwargs(cfg: Config) -> dict[str, Any]:
    """The :class:`~darkmatter.sources.planted.PlantedSpec` fields of this run (seeded by ``seed``)."""
    p = cfg.planted
    return dict(d_model=p.planted_d_model, n_features=p.planted_features,
                n_withheld=p.planted_withheld if p.planted_mode == "withheld" else 0, p_fire=p.planted_p_fire,
                magnitude_sigma=p.planted_magnitude_sigma, noise_std=p.planted_noise, seed=cfg.source.seed,
                oracle_threshold=p.planted_threshold)


def resolve_new(given: dict[str, Any]) -> Config:
    """Step 01: start from the preset, apply typed flags. Raises DarkMatterError on bad values."""
    preset = given.get("preset", Config().source.preset)
    if preset not in PRESETS:
        raise DarkMatterError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return _sae_windows(_apply(PRESETS[preset], given), given)


def _sae_windows(cfg: Config, given: dict[str, Any]) -> Config:
    """An ``--sae-path`` SAE's SAELens metadata sets ``--context-size`` / ``--prepend-bos`` where the
    user typed neither (a model source only; a release's metadata is only known once step 01 loads
    it, which then prints any difference)."""
    s = cfg.source
    if s.sae_path is None or s.model_source in ("planted", "cached"):
        return cfg
    from darkmatter.sources.saes import folder_metadata

    meta, adopt = folder_metadata(s.sae_path), {}
    size, bos = meta.get("context_size"), meta.get("prepend_bos")
    if "context_size" not in given and type(size) is int and size >= 2 and size != s.context_size:
        adopt["context_size"] = size
    if "prepend_bos" not in given and isinstance(bos, bool) and bos != s.prepend_bos:
        adopt["prepend_bos"] = bos
    if not adopt:
        return cfg
    typed = ", ".join(f"{flag(k)} {str(v).lower() if isinstance(v, bool) else v}" for k, v in adopt.items())
    print(f"--sae-path {s.sae_path}: taking {typed} from the SAE's SAELens metadata (type the flag to override)")
    cfg = with_values(cfg, adopt)
    validate(cfg)
    return cfg


def config_from_dict(recorded: dict[str, Any], where: str) -> Config:
    """A Config from config.json's content. Raises DarkMatterError when it does not fit this version."""
    try:
        return Config(**{sec: SECTIONS[sec](**recorded[sec]) for sec in SECTIONS})
    except (KeyError, TypeError) as exc:
        raise DarkMatterError(f"{where} was written by another version of this tool ({exc}): rerun "
                              f"scripts/{table.step(1).script} with your flags") from exc


def resolve_recorded(given: dict[str, Any], recorded: dict[str, Any], step: table.Step, where: str) -> Config:
    """Steps 02+: the recorded config plus typed flags this step may change.

    Raises:
        DarkMatterError: a typed flag contradicts a field owned by an earlier step; the message
            names that step's script.
    """
    base = config_from_dict(recorded, where)
    for name, value in given.items():
        owner = table.owner(FIELD_SECTION[name])
        if name == "outputs" or owner is None or owner.number >= step.number or get(base, name) == value:
            continue
        raise DarkMatterError(
            f"{flag(name)} {value!r} contradicts the run recorded in {where} ({get(base, name)!r}); "
            f"{flag(name)} is owned by {owner.script}: rerun scripts/{owner.script} {flag(name)} {value} "
            "and the steps after it, or pass --outputs DIR for a separate run")
    return _apply(base, given)


def run_id(cfg: Config, step_number: int) -> str:
    """A fingerprint of every field owned by steps 1..``step_number`` (the step table says which).

    Each step stamps its JSON output with its own ``run_id``; a later step compares the stamps
    of its inputs with the current config, so files left over from a differently configured run
    are refused instead of silently mixed. Rerunning a step with the same config rewrites
    identical bytes.
    """
    sections = {sec for s in table.steps() if s.number <= step_number for sec in s.owns}
    owned = {k: v for k, v in flat(cfg).items() if FIELD_SECTION[k] in sections}
    return hashlib.sha1(json.dumps(owned, sort_keys=True).encode()).hexdigest()[:12]
