"""The registry of activation sources: each ``--model-source`` kind declared once.

A :class:`SourceKind` says how the run's config becomes a source of activations (``open``), what
the kind can do (a language model behind it: windows of text, layers, logit lens; its own SAE),
which config fields it alone reads, how it is inferred from the flags typed, what is checked
before anything loads, and which local files are fingerprinted into ``run_id``. Steps, the
config checks, the input fingerprints, ``--layers`` and the SAELens metadata ask the registry;
none of them names a kind. A new source is its class in ``darkmatter/sources/`` (an
:class:`~darkmatter.sources.base.ActivationSource`) and one :func:`register_source` call here
(``tests/pipeline/test_source_registry.py`` registers a dummy and follows it through a run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from darkmatter.errors import DarkMatterError

if TYPE_CHECKING:
    from darkmatter.pipeline.config import Config
    from darkmatter.sources.base import ActivationSource


@dataclass(frozen=True)
class SourceKind:
    """One kind of activation source.

    Attributes:
        name: the value of ``--model-source``.
        open: ``(cfg, device) -> ActivationSource``; nothing heavy is loaded until the source needs it.
        has_model: a language model reads windows of text at a hook: ``--layers``, the text flags,
            ``--context-size`` / ``--prepend-bos`` and the causal tests apply.
        brings_sae: the source has its own SAE (the planted oracle): ``--sae-release`` / ``--sae-path``
            are refused.
        names_model: ``--model`` names what made the activations (False for activations made elsewhere).
        model_class_name: SAELens's ``model_class_name`` for SAEs trained on it, or None.
        own_fields: source fields only this kind reads; given with another kind they are refused.
        selected_by: a source field that, typed without ``--model-source``, selects this kind.
        claims_model: ``model -> bool``: typed ``--model`` values that select this kind (first match
            in registration order; the kind with ``claims_model=None`` and ``fallback=True`` takes
            the rest).
        fallback: the kind an unclaimed ``--model`` selects.
        check: ``cfg -> [problem, ...]`` before anything loads (ranges, the hook's form).
        check_local: ``cfg -> None``: its local files exist and are usable, without loading them;
            raises DarkMatterError naming the file.
        local_inputs: ``cfg -> [(field, path), ...]``: local files and folders whose bytes belong
            in ``run_id`` (``text_files`` is a glob).
    """

    name: str
    open: Callable[[Config, str], ActivationSource]
    has_model: bool
    brings_sae: bool = False
    names_model: bool = True
    model_class_name: str | None = None
    own_fields: tuple[str, ...] = ()
    selected_by: str | None = None
    claims_model: Callable[[str], bool] | None = None
    fallback: bool = False
    check: Callable[[Config], list[str]] | None = None
    check_local: Callable[[Config], None] | None = None
    local_inputs: Callable[[Config], list[tuple[str, str]]] | None = None


_KINDS: dict[str, SourceKind] = {}
#: the registered names, in order: the choices of ``--model-source`` (a live list)
NAMES: list[str] = []


def register_source(kind: SourceKind) -> SourceKind:
    """Add ``kind`` to the registry. Raises ValueError when its name is taken."""
    if kind.name in _KINDS:
        raise ValueError(f"source kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    NAMES.append(kind.name)
    return kind


@contextmanager
def registered_source(kind: SourceKind) -> Iterator[SourceKind]:
    """Register ``kind`` for the duration of a ``with`` block (tests)."""
    register_source(kind)
    try:
        yield kind
    finally:
        del _KINDS[kind.name]
        NAMES.remove(kind.name)


def source_kind(name: str) -> SourceKind:
    """The registered kind ``name``. Raises DarkMatterError naming the registered ones."""
    if name not in _KINDS:
        raise DarkMatterError(f"--model-source {name!r} is not a source kind; choose one of {', '.join(NAMES)}")
    return _KINDS[name]


def kinds() -> list[SourceKind]:
    """Every registered kind, in registration order."""
    return [_KINDS[n] for n in NAMES]


def of(cfg: Config) -> SourceKind:
    """The kind of the run's source (``cfg.source.model_source``)."""
    return source_kind(cfg.source.model_source)


def infer(model: str) -> str:
    """The kind a typed ``--model`` selects: the first kind whose ``claims_model`` accepts it,
    else the fallback kind."""
    for k in kinds():
        if k.claims_model is not None and k.claims_model(model):
            return k.name
    return next(k.name for k in kinds() if k.fallback)


def selected_by(given: dict[str, Any]) -> str | None:
    """The kind selected by a typed field (``--activations`` → ``cached``), or None."""
    return next((k.name for k in kinds() if k.selected_by and given.get(k.selected_by) is not None), None)


def problems(cfg: Config) -> list[str]:
    """What the registry knows is wrong with the run's source fields (one message each)."""
    from darkmatter.pipeline.flags import flag

    s, kind, found = cfg.source, of(cfg), []
    for k in kinds():
        for name in k.own_fields:
            given = getattr(s, name) is not None
            if k is kind and not given and name == k.selected_by:
                found.append(f"--model-source {k.name} needs {flag(name)} PATH")
            if k is not kind and given:
                found.append(f"{flag(name)} is read only by --model-source {k.name}, not {kind.name}: drop one")
    if kind.brings_sae and (s.sae_release or s.sae_path):
        found.append(f"{kind.name} activations bring their own SAE: drop --sae-release/--sae-path")
    if kind.check is not None:
        found += kind.check(cfg)
    return found


def sae_metadata(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """SAELens metadata of a run's activations from config.json's content
    (:func:`darkmatter.sources.saes.run_metadata` with the kind's capabilities).

    Raises:
        DarkMatterError: no ``source.hook_name``, or an unknown ``model_source``.
    """
    from darkmatter.sources.saes import run_metadata

    s = cfg_dict.get("source") if isinstance(cfg_dict, dict) else None
    kind = source_kind(s.get("model_source", "")) if isinstance(s, dict) and s.get("hook_name") else None
    return run_metadata(cfg_dict, windows=bool(kind and kind.has_model), names_model=bool(kind and kind.names_model),
                        model_class_name=kind.model_class_name if kind else None)


# ------------------------------------------------------------------------------ the built-in kinds
def _open_model(cfg: Config, device: str) -> ActivationSource:
    from darkmatter.sources.model_source import ModelSource, TextSpec

    s = cfg.source
    text = TextSpec(text_files=s.text_files, dataset=s.dataset, column=s.dataset_column,
                    context_size=s.context_size, prepend_bos=s.prepend_bos, split=cfg.trains_sae, corpus=s.corpus)
    return ModelSource(s.model_source, s.model, s.hook_name, text, s.max_norm_ratio, device, s.seed)


def _check_hook(cfg: Config) -> list[str]:
    from darkmatter.sources.model_source import layer_of

    try:
        layer_of(cfg.source.hook_name)
    except DarkMatterError as exc:
        return [str(exc)]
    return []


def _check_model_files(cfg: Config) -> None:
    from darkmatter.sources.model_source import check_model

    s = cfg.source
    check_model(s.model_source, s.model)
    if s.text_files:
        from darkmatter.sources.text import text_paths

        text_paths(s.text_files)
    elif not s.dataset:
        from darkmatter.sources.corpus import check_installed

        check_installed(s.corpus)


def _model_inputs(cfg: Config) -> list[tuple[str, str]]:
    s = cfg.source
    found = [("model", s.model)] if s.model_source == "local_hooked" else []
    return found + ([("text_files", s.text_files)] if s.text_files else [])


def _open_planted(cfg: Config, device: str) -> ActivationSource:
    from darkmatter.pipeline.validate import planted_spec_kwargs
    from darkmatter.sources.planted import PlantedSource, PlantedSpec

    return PlantedSource(PlantedSpec(**planted_spec_kwargs(cfg)), cfg.planted.planted_mode)


def _check_planted(cfg: Config) -> list[str]:
    from darkmatter.pipeline.validate import planted_problems

    return planted_problems(cfg)


def _open_cached(cfg: Config, device: str) -> ActivationSource:
    from darkmatter.sources.cached import CachedSource

    s = cfg.source
    if s.activations is None:
        raise DarkMatterError("--model-source cached needs --activations PATH")
    return CachedSource(s.activations, s.hook_name, s.activation_tokens, s.tokenizer, s.max_norm_ratio,
                        split=cfg.trains_sae, documents_path=s.activation_documents)


def _cached_inputs(cfg: Config) -> list[tuple[str, str]]:
    s = cfg.source
    given = {"activations": s.activations, "activation_tokens": s.activation_tokens,
             "activation_documents": s.activation_documents, "tokenizer": s.tokenizer}
    return [(name, value) for name, value in given.items()
            if value is not None and (name != "tokenizer" or Path(value).exists())]  # a tokenizer may be a hub name


def _is_model_folder(model: str) -> bool:
    return (Path(model) / "hooked_config.json").is_file()


def _is_smollm2(model: str) -> bool:
    from darkmatter.pipeline.config import SMOLLM2_MODEL

    return model == SMOLLM2_MODEL




def _model_kind(name: str, **capabilities: Any) -> SourceKind:
    """A language model at a hook over text (:class:`~darkmatter.sources.model_source.ModelSource`)."""
    return SourceKind(name, _open_model, has_model=True, check=_check_hook, check_local=_check_model_files,
                      local_inputs=_model_inputs, **capabilities)


register_source(_model_kind("transformer_lens", model_class_name="HookedTransformer", fallback=True))
register_source(_model_kind("local_hooked", model_class_name="HookedTransformer", claims_model=_is_model_folder))
register_source(_model_kind("smollm2_gguf", claims_model=_is_smollm2))
register_source(SourceKind("planted", _open_planted, has_model=False, brings_sae=True, check=_check_planted,
                           claims_model=lambda model: model == "planted"))
register_source(SourceKind("cached", _open_cached, has_model=False, names_model=False,
                           own_fields=("activations",), selected_by="activations", local_inputs=_cached_inputs))
