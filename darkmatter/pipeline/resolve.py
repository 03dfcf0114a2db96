"""How typed flags become a Config, and the run_id stamps that keep runs apart.

Step 01 starts from the preset and applies the flags the user typed. Later steps read
``config.json`` back and apply typed flags too, but a flag owned by an *earlier* step (the
step table says which) must repeat the recorded value: mixing two runs in one folder would
give silently wrong numbers, so a contradiction stops with the owning step's script to rerun.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import source_kinds, table
from darkmatter.pipeline.config import FIELD_SECTION, Config, flat, get, with_values
from darkmatter.pipeline.flags import flag
from darkmatter.pipeline.presets import PRESETS
from darkmatter.pipeline.validate import config_from_dict, planted_spec_kwargs, validate

__all__ = ["config_from_dict", "planted_spec_kwargs", "resolve_new", "resolve_recorded", "run_id", "validate"]

_EXCLUSIVE = (("sae_path", "sae_release"), ("text_files", "dataset"), ("activations", "text_files"),
              ("activations", "dataset"), ("corpus", "text_files"), ("corpus", "dataset"), ("activations", "corpus"))


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
    selected = source_kinds.selected_by({k: v for k, v in given.items() if k in changed})
    if selected is not None and "model_source" not in given:
        clear["model_source"] = selected  # e.g. --activations: cached
    elif "model" in changed and "model_source" not in given:
        clear["model_source"] = source_kinds.infer(cfg.source.model)
    if not source_kinds.source_kind(clear.get("model_source", cfg.source.model_source)).has_model:
        clear.update(text_files=None, dataset=None)  # no model reads text
    if "sae_path" in changed and cfg.source.sae_path is not None:
        clear.update(sae_release=None, sae_id=None)
    if "sae_release" in changed and cfg.source.sae_release is not None:
        clear["sae_path"] = None
    if "text_files" in changed and cfg.source.text_files is not None:
        clear["dataset"] = None
    if "dataset" in changed and cfg.source.dataset is not None:
        clear["text_files"] = None
    if "corpus" in changed:
        clear.update(text_files=None, dataset=None)
    if {"model", "sae_release", "sae_id", "sae_path", "hook_name"} & changed and \
            "neuronpedia_id" not in given:
        clear["neuronpedia_id"] = None
    cfg = with_values(cfg, clear)
    validate(cfg)
    return cfg


def resolve_new(given: dict[str, Any]) -> Config:
    """Step 01: start from the preset, apply typed flags. Raises DarkMatterError on bad values."""
    preset = given.get("preset", Config().source.preset)
    if preset not in PRESETS:
        raise DarkMatterError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    if "corpus" in given:  # a typed --corpus replaces the preset's --dataset (gpt2-small-res-jb) or --text-files
        base = with_values(base, {"text_files": None, "dataset": None})
    return _sae_windows(_apply(base, given), given)


def _sae_windows(cfg: Config, given: dict[str, Any]) -> Config:
    """An ``--sae-path`` SAE's SAELens metadata sets ``--context-size`` / ``--prepend-bos`` where the
    user typed neither (a model source only; a release's metadata is only known once step 01 loads
    it, which then prints any difference)."""
    s = cfg.source
    if s.sae_path is None or not source_kinds.of(cfg).has_model:
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


#: Fields of the shared ``run`` section that change what the steps write, with the first output they
#: change: its step's run_id and every later one include them.
SHARED_DATA_FIELDS = {
    "batch_size": "sae",  # the windows per batch: the massive-token rule's batch median, step 02's checkpoints
    "device": "setup.json",  # the arithmetic of every step (SAE training in 01)
    "sae_chunk_size": "sae_stats.json",  # the order of the running sums
    "memory_gb": "ica.json",  # rows in memory or streamed from disk: the order of FastICA's sums
}


def first_step_of(name: str) -> int | None:
    """The number of the first step whose outputs shared field ``name`` changes (None: it changes none)."""
    return table.producer_step(SHARED_DATA_FIELDS[name]).number if name in SHARED_DATA_FIELDS else None


#: Fields that change no output, and why (tests/pipeline/test_fingerprints.py walks every field).
NOT_IN_RUN_ID = {"outputs": "where the files go, not what they hold"}


def run_id(cfg: Config, step_number: int, inputs: dict[str, Any] | None = None) -> str:
    """A fingerprint of every field owned by steps 1..``step_number`` (the step table says which),
    and of the local inputs those steps read (``inputs``: :func:`darkmatter.pipeline.inputs.fingerprints`,
    each with the number of the step that first reads it; none for planted data).

    Each step stamps its JSON output with its own ``run_id``; a later step compares the stamps
    of its inputs with the current config, so files left over from a differently configured run
    (or one that read other text, another model or SAE folder) are refused instead of silently
    mixed. Rerunning a step with the same config and inputs rewrites identical bytes.
    """
    sections = {sec for s in table.steps() if s.number <= step_number for sec in s.owns}
    owned: dict[str, Any] = {k: v for k, v in flat(cfg).items() if FIELD_SECTION[k] in sections
                             or (first_step_of(k) or step_number + 1) <= step_number}
    read = {k: v["hash"] for k, v in (inputs or {}).items() if v["step"] <= step_number}
    if read:
        owned["inputs"] = read
    return hashlib.sha1(json.dumps(owned, sort_keys=True).encode()).hexdigest()[:12]
