"""Which values can make a run: the ranges of every flag, and config.json's fields read back.

:func:`validate` is called on every resolved config (step 01's flags, and each later step's
recorded config plus its typed flags); :func:`config_from_dict` checks config.json field by field
so a hand edit is one line naming the field, not a TypeError deep in a step.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import source_kinds, table
from darkmatter.pipeline.config import SECTIONS, Config, get
from darkmatter.pipeline.flags import flag


def validate(cfg: Config) -> None:
    """Raise DarkMatterError on values that cannot make a run."""
    s, problems = cfg.source, []
    for section in dataclasses.fields(cfg):  # NaN and ±inf pass every range test below and are not JSON
        for f in dataclasses.fields(getattr(cfg, section.name)):
            value = getattr(getattr(cfg, section.name), f.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{flag(f.name)} must be a finite number, not {value}")
    if problems:  # the range tests below would compute with them
        raise DarkMatterError("; ".join(problems))
    if not cfg.run.outputs.strip():
        problems.append("--outputs is empty: name a new, empty or run folder (e.g. --outputs outputs)")
    if (s.sae_release is None) != (s.sae_id is None):
        problems.append("--sae-release and --sae-id go together")
    if s.context_size < 2:
        problems.append("--context-size must be at least 2")
    for name in ("n_tokens", "batch_size", "sae_chunk_size", "sae_expansion", "sae_l0",
                 "sae_train_tokens", "sae_train_samples", "sae_batch_size", "n_top_contexts", "null_draws",
                 "causal_null_draws", "causal_max_components"):
        if get(cfg, name) < 1:
            problems.append(f"{flag(name)} must be positive")
    for name in ("null_draws", "causal_null_draws"):
        if get(cfg, name) == 1:
            problems.append(f"{flag(name)} 1: a percentile of the null needs at least 2 draws (the default is "
                            f"{get(Config(), name)})")
    if s.seed < 0:
        problems.append("--seed must be 0 or more")
    if cfg.completeness.completeness_runs < 0:
        problems.append("--completeness-runs must be 0 or more (0 skips the detection limit)")
    if not cfg.run.memory_gb >= 0:
        problems.append("--memory-gb must be 0 or more (0: always stream step 04's rows from disk)")
    if not cfg.training.sae_lr > 0:
        problems.append("--sae-lr must be positive")
    problems += _too_few_tokens(cfg)
    d = cfg.run.device
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", d):
        problems.append(f"--device {d!r} is not a torch device here: auto, cpu, cuda or cuda:N")
    elif d.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            problems.append(f"--device {d}: this machine has no CUDA device; pass --device cpu (or auto)")
        elif ":" in d and int(d.split(":")[1]) >= torch.cuda.device_count():
            problems.append(f"--device {d}: there are {torch.cuda.device_count()} CUDA devices here")
    if cfg.ica.stability_splits < 1:
        problems.append("--stability-splits must be at least 1: stability is measured across restarts")
    if not 0 < cfg.ica.stable_frequency <= 1:
        problems.append("--stable-frequency must lie in (0, 1]")
    for name in ("causal_windows", "context_window"):
        if get(cfg, name) < 0:
            problems.append(f"{flag(name)} must be 0 or more")
    for name, low in (("n_components", 2), ("max_components", 2), ("max_norm_ratio", 1)):
        value = get(cfg, name)
        if value is not None and (value < low if name != "max_norm_ratio" else value <= low):
            problems.append(f"{flag(name)} must be {'above 1' if name == 'max_norm_ratio' else 'at least 2'} or none")
    i = cfg.ica
    if i.ica_max_iter < 1:
        problems.append("--ica-max-iter must be at least 1")
    if i.ica_tol <= 0:
        problems.append("--ica-tol must be positive")
    for name in ("stable_cos", "ica_resample"):
        if not 0 < get(cfg, name) <= 1:
            problems.append(f"{flag(name)} must lie in (0, 1]")
    if i.samples_per_parameter <= 0:
        problems.append("--samples-per-parameter must be positive")
    if s.activations is None and (s.activation_tokens is not None or s.tokenizer is not None
                                  or s.activation_documents is not None):
        problems.append("--activation-tokens, --activation-documents and --tokenizer describe --activations: "
                        "pass it too, or drop them")
    problems += source_kinds.problems(cfg)
    if problems:
        raise DarkMatterError("; ".join(problems))


def min_ica_tokens(cfg: Config) -> int:
    """The fewest tokens an ICA fit can use: n ≥ --samples-per-parameter · k² with k ≥ 2."""
    return max(1, math.ceil(cfg.ica.samples_per_parameter * 4))


def _too_few_tokens(cfg: Config) -> list[str]:
    """--n-tokens and --ica-max-tokens below what step 04 needs, refused before step 02 collects."""
    low, problems = min_ica_tokens(cfg), []
    n, fit = cfg.collect.n_tokens, cfg.ica.ica_max_tokens
    if 1 <= n < low:
        problems.append(f"--n-tokens {n} is too few for ICA (n ≥ --samples-per-parameter "
                        f"{cfg.ica.samples_per_parameter:g} · k² with k ≥ 2): pass --n-tokens ≥ {low}")
    if fit is not None and fit < low:
        problems.append(f"--ica-max-tokens {fit} is too few for ICA (n ≥ --samples-per-parameter "
                        f"{cfg.ica.samples_per_parameter:g} · k² with k ≥ 2): pass --ica-max-tokens ≥ {low} or none")
    return problems


def planted_problems(cfg: Config) -> list[str]:
    """The planted flags' ranges, named by flag, then (when they hold) PlantedSpec's own checks."""
    problems = _planted_ranges(cfg)
    if problems:
        return problems
    from darkmatter.sources.planted import PlantedSpec

    try:
        spec = PlantedSpec(**planted_spec_kwargs(cfg))
        if cfg.planted.planted_mode == "withheld" and len(spec.known()) == 0:
            problems.append("--planted-withheld must leave the oracle SAE at least one known feature "
                            f"(fewer than --planted-features {spec.n_features})")
    except ValueError as exc:
        problems.append(f"planted: {exc}")
    return problems


def _planted_ranges(cfg: Config) -> list[str]:
    """The planted flags' ranges, named by flag (PlantedSpec's own checks name its fields)."""
    p, problems = cfg.planted, []
    if p.planted_d_model < 2:
        problems.append("--planted-d-model must be at least 2")
    if p.planted_features < 1:
        problems.append("--planted-features must be positive")
    if not 0 <= p.planted_withheld <= max(p.planted_features, 0):
        problems.append(f"--planted-withheld must lie in 0..--planted-features ({p.planted_features})")
    if not 0 < p.planted_p_fire <= 1:
        problems.append("--planted-p-fire must lie in (0, 1]")
    for name in ("planted_magnitude_sigma", "planted_noise", "planted_threshold", "planted_doc_scale_sigma",
                 "planted_token_scale_sigma", "planted_positional_features"):
        if get(cfg, name) < 0:
            problems.append(f"{flag(name)} must be 0 or more")
    if p.planted_doc_length < 0 or p.planted_doc_length == 1:
        problems.append("--planted-doc-length must be 0 (iid rows) or at least 2")
    if not 0 < p.planted_topic_share <= 1:
        problems.append("--planted-topic-share must lie in (0, 1]")
    elif 0 < p.planted_p_fire <= 1 and p.planted_p_fire > p.planted_topic_share:
        problems.append(f"--planted-p-fire {p.planted_p_fire:g} must not exceed --planted-topic-share "
                        f"{p.planted_topic_share:g} (features fire at rate p_fire / share inside their documents)")
    if p.planted_doc_length == 0 and (p.planted_doc_scale_sigma > 0 or p.planted_topic_share < 1
                                      or p.planted_positional_features > 0):
        problems.append("--planted-doc-scale-sigma, --planted-topic-share below 1 and --planted-positional-features "
                        "need documents: pass --planted-doc-length N (e.g. 200)")
    return problems


def planted_spec_kwargs(cfg: Config) -> dict[str, Any]:
    """The :class:`~darkmatter.sources.planted.PlantedSpec` fields of this run (seeded by ``seed``)."""
    p = cfg.planted
    return dict(d_model=p.planted_d_model, n_features=p.planted_features,
                n_withheld=p.planted_withheld if p.planted_mode == "withheld" else 0, p_fire=p.planted_p_fire,
                magnitude_sigma=p.planted_magnitude_sigma, noise_std=p.planted_noise, seed=cfg.source.seed,
                oracle_threshold=p.planted_threshold, doc_length=p.planted_doc_length,
                doc_scale_sigma=p.planted_doc_scale_sigma, token_scale_sigma=p.planted_token_scale_sigma,
                topic_share=p.planted_topic_share, positional_features=p.planted_positional_features)


def _fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value fits a config field's type (int, float, str, bool, Literal, X | None)."""
    if get_origin(kind) is Literal:
        return value in get_args(kind)
    if get_origin(kind) in (Union, types.UnionType):
        return any(_fits(value, k) for k in get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return type(value) in (int, float)
    return type(value) is kind


def config_from_dict(recorded: Any, where: str) -> Config:
    """A Config from config.json's content, every field checked against its type.

    Raises:
        DarkMatterError: it is not an object, a section or field is missing or unknown (another
            version of the tool), or a field has the wrong type (a hand edit); the message names
            the field and the step that owns it.
    """
    first = table.step(1).script
    if not isinstance(recorded, dict):
        raise DarkMatterError(f"{where} is not a JSON object of config sections: rerun scripts/{first} with your flags")
    for sec, cls in SECTIONS.items():
        got = recorded.get(sec)
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(got, dict) or set(got) != names:
            detail = "missing" if not isinstance(got, dict) else ", ".join(sorted(set(got) ^ names))
            raise DarkMatterError(f"{where} was written by another version of this tool (section {sec}: {detail}): "
                                  f"rerun scripts/{first} with your flags")
        hints = get_type_hints(cls)
        for name in sorted(names):
            if not _fits(got[name], hints[name]):
                owner, kind = table.owner(sec), getattr(hints[name], "__name__", hints[name])
                raise DarkMatterError(
                    f"{where}: {sec}.{name} is {got[name]!r}, not of type {kind} "
                    f"(edited by hand?): rerun scripts/{first} with your flags ({flag(name)} belongs to "
                    f"{owner.script if owner else 'every step'})")
    return Config(**{sec: SECTIONS[sec](**recorded[sec]) for sec in SECTIONS})


