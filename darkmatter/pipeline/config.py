"""The one run configuration: sections of typed, self-documenting options (presets: presets.py).

Each section is a frozen dataclass whose field docstrings become ``--help`` (through
``simple_parsing``, as EleutherAI's sparsify does) and whose ``Literal`` types become choices.
A section is owned by the step that first uses it (the step table,
:mod:`darkmatter.pipeline.table`, says which); ``run`` is shared by every step.
Field names are unique across sections, so ``--n-tokens`` names ``collect.n_tokens``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from simple_parsing import field

from darkmatter.pipeline import source_kinds

SMOLLM2_MODEL = "SmolLM2-135M-Instruct"

PresetName = Literal["smollm2-135m-local", "smollm2-135m-2m", "gpt2-small-res-jb", "planted"]
Architecture = Literal["standard", "topk", "batchtopk", "jumprelu"]
PlantedMode = Literal["withheld", "capacity"]
ICABackend = Literal["torch", "sklearn"]
CausalComponents = Literal["reproducible", "all"]


def _none_or(kind: type) -> Any:
    """argparse type for an optional value: ``none``/``auto`` (or empty) mean None."""
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "auto", "") else kind(text)

    parse.__name__ = f"{kind.__name__}|none"
    return parse


def _optional(default: Any, kind: type) -> Any:
    return field(default=default, type=_none_or(kind), metavar=f"{kind.__name__.upper()}|none")


@dataclass(frozen=True)
class SourceOptions:
    """Where activations come from: model, hook, SAE and text."""

    preset: PresetName = "smollm2-135m-local"
    """named preset the other fields start from"""
    model: str = SMOLLM2_MODEL
    """a TransformerLens name, the bundled SmolLM2, or a folder with hooked_config.json (+ weights.pt, tokenizer)"""
    model_source: str = field(default="smollm2_gguf", choices=source_kinds.NAMES)
    """how activations are made (pipeline/source_kinds.py); derived from --model / --activations when omitted"""
    hook_name: str = "blocks.15.hook_resid_pre"
    """TransformerLens hook whose activations the SAE reconstructs"""
    sae_release: str | None = _optional(None, str)
    """SAELens release of a pretrained SAE (with --sae-id)"""
    sae_id: str | None = _optional(None, str)
    """SAELens id inside --sae-release"""
    sae_path: str | None = _optional(None, str)
    """local SAELens folder (cfg.json + sae_weights.safetensors); with neither this nor --sae-release, 01 trains one"""
    dataset: str | None = _optional(None, str)
    """Hugging Face dataset name, streamed"""
    dataset_column: str = "text"
    """text column of --dataset"""
    text_files: str | None = _optional(None, str)
    """glob of local text files; replaces --dataset and --corpus"""
    corpus: Literal["mixed", "python-docs", "mixed-large"] = "mixed"
    """text without --text-files/--dataset: mixed (27k documents), mixed-large (+ GCIDE: 148k), python-docs"""
    activations: str | None = _optional(None, str)
    """precomputed activations: an .npy [n_tokens, d_model] or [n_windows, context, d_model], or a SAELens
    activation-cache folder; no model is loaded"""
    activation_tokens: str | None = _optional(None, str)
    """.npy of token ids [n_windows, context] matching --activations (text contexts in 06)"""
    activation_documents: str | None = _optional(None, str)
    """.npy of int document (sequence) ids of --activations, one per window [n_windows] or per row: restarts
    and standard errors then resample whole documents (without it, whole windows, or rows)"""
    tokenizer: str | None = _optional(None, str)
    """tokenizer (folder or cached name) that decodes the token ids of --activations"""
    context_size: int = 128
    """tokens per window, BOS included"""
    prepend_bos: bool = True
    """prepend BOS to every window (as gpt2-small-res-jb was trained)"""
    max_norm_ratio: float | None = _optional(10.0, float)
    """drop tokens whose activation norm exceeds this multiple of the batch median (attention-sink massive
    activations, Sun et al. 2024); none keeps every token"""
    seed: int = 42
    """master seed: SAE training, subsamples, first ICA seed, baselines"""
    neuronpedia_id: str | None = _optional(None, str)
    """Neuronpedia model/SAE id, e.g. gpt2-small/6-res-jb"""


@dataclass(frozen=True)
class TrainingOptions:
    """The SAE trained when none is named."""

    sae_arch: Architecture = "topk"
    """SAELens training architecture: standard (ReLU + L1), topk, batchtopk, jumprelu"""
    sae_expansion: int = 8
    """d_sae / d_model"""
    sae_l0: float = 32.0
    """target L0: k for topk/batchtopk; the L1 or L0 coefficient of standard/jumprelu is calibrated to hit it"""
    sae_train_tokens: int = 120_000
    """activation tokens to train on, kept apart from the analysed ones (even-numbered documents train, odd
    ones are analysed)"""
    sae_train_samples: int = 360_000
    """samples the trainer sees (epochs over the tokens)"""
    sae_lr: float = 1e-3
    """Adam learning rate"""
    sae_batch_size: int = 1024
    """training batch, in tokens"""


@dataclass(frozen=True)
class PlantedOptions:
    """Planted activations with a known answer (--preset planted)."""

    planted_mode: PlantedMode = "withheld"
    """withheld: an oracle SAE misses --planted-withheld features; capacity: a trained SAE too small or too sparse"""
    planted_d_model: int = 64
    """width of the activations"""
    planted_features: int = 128
    """true feature directions (more than d_model: superposition)"""
    planted_withheld: int = 16
    """features the oracle SAE does not know"""
    planted_p_fire: float = 0.01
    """probability that a feature fires on a token"""
    planted_magnitude_sigma: float = 0.3
    """sigma of the log-normal feature magnitudes"""
    planted_noise: float = 0.05
    """standard deviation of the Gaussian noise per dimension"""
    planted_threshold: float = 0.6
    """JumpReLU threshold of the oracle SAE"""
    planted_doc_length: int = 0
    """mean document length in rows (log-normal lengths); 0 = iid rows, no documents"""
    planted_doc_scale_sigma: float = 0.0
    """sigma of the log-normal noise scale shared by a document's rows (needs --planted-doc-length); 0 = none"""
    planted_token_scale_sigma: float = 0.0
    """sigma of the log-normal noise scale of each row; with the document scale the noise is a Gaussian scale
    mixture (heavy-tailed); 0 = Gaussian noise"""
    planted_topic_share: float = 1.0
    """share of the documents each feature may fire in, at rate p_fire / share there (needs documents); 1 = all"""
    planted_positional_features: int = 0
    """extra features, unknown to the oracle SAE, that fire only at positions 1-2 of a document (artifacts,
    not dark features; needs documents)"""


@dataclass(frozen=True)
class CollectOptions:
    """Collection of activations and residuals."""

    n_tokens: int = 200_000
    """tokens analysed (BOS positions and massive activations excluded)"""


@dataclass(frozen=True)
class ICAOptions:
    """The decomposition."""

    n_components: int | None = _optional(None, int)
    """ICA components k; default: the k sweep's choice (most components stable and above the noise floor)"""
    max_components: int | None = _optional(None, int)
    """largest k the sweep tries (default: all the samples-per-parameter rule allows)"""
    samples_per_parameter: float = 20.0
    """fitted tokens per unmixing parameter the sweep requires: k ≤ √(n / this) (Onton & Makeig 2006)"""
    ica_backend: ICABackend = "torch"
    """FastICA: torch (our engine, stops once the identifiable components are stable; CPU or CUDA) or sklearn"""
    stability_splits: int = 5
    """random splits of the documents for the stability check: both halves of each are refitted (FastICA seeds
    seed+1, seed+2, ...) and a component's stability is how often it reappears"""
    stable_frequency: float = 0.9
    """share of the restarts that can tell (whose matching row settled) a component must reappear in to be stable"""
    ica_max_iter: int = 200
    """FastICA iteration cap"""
    ica_tol: float = 1e-6
    """FastICA tolerance (scikit-learn's 1e-4 can stop at a mixed solution)"""
    ica_max_tokens: int | None = _optional(None, int)
    """fit ICA on a random subsample of this many tokens (sources still cover every token)"""
    ica_resample: float = 0.5
    """share of the documents each restart fits; 0.5 = both halves of each split (disjoint pairs); 1 = all rows"""
    stable_cos: float = 0.9
    """matched |cos| at which a component counts as reappearing in a restart"""
    control: bool = True
    """also run the same ICA on the matched null, a norm-matched elliptical surrogate (same tokens, norms,
    documents, k, seeds, restarts, optimisation): the noise floor"""


@dataclass(frozen=True)
class CompareOptions:
    """Comparison with the SAE and with the matched null."""

    null_draws: int = 20
    """random rotations in the whitened subspace drawn for the matched null's distribution"""
    keep_artifacts: bool = False
    """let components flagged as positional artifacts (top activations on the first positions) be candidates"""


@dataclass(frozen=True)
class InterpretOptions:
    """Reading the components."""

    n_top_contexts: int = 20
    """top and bottom activating contexts kept per component"""
    context_window: int = 10
    """tokens of context shown either side of the marked token"""
    causal_windows: int = 64
    """held-out windows the causal tests run on, each starting at a document start, at most two per document, so
    from at least half as many documents (blocks of 128 rows for planted data); 0 skips the tests"""
    causal_null_draws: int = 10
    """matched null rotations each top-m add-back is held against (at the ICA set's variance, paired per document);
    the documents set the paired difference's standard error (the draws' spread adds under 1/30 to it at 10)"""
    causal_components: CausalComponents = "reproducible"
    """components given per-component causal tests (add back against a matched null, ablation, logit effect):
    reproducible = settled and stable ones plus candidates, at most --causal-max-components in the add-back order;
    all = every component"""
    causal_max_components: int = 32
    """at most this many components get per-component causal tests under --causal-components reproducible"""


@dataclass(frozen=True)
class CompletenessOptions:
    """The detection limit: injection–recovery on the real activations (step 07)."""

    completeness_runs: int = 3
    """injection runs of synthetic sparse features (each the whole search); 0 skips the completeness grid"""
    completeness_null: bool = True
    """also search a structureless norm-matched surrogate of the residual: the false-candidate count"""


@dataclass(frozen=True)
class RunOptions:
    """Run-time settings."""

    outputs: str = "outputs"
    """folder where every step reads and writes its files"""
    device: str = "auto"
    """torch device: auto, cpu, cuda, cuda:1, ..."""
    batch_size: int = 16
    """windows per model forward pass"""
    sae_chunk_size: int = 4096
    """token rows per SAE encode/decode and per streamed chunk"""
    memory_gb: float = 2.0
    """step 04 holds its whitened rows in memory (or on the GPU) up to this size per process; larger ones are
    streamed from a scratch file in --outputs"""


@dataclass(frozen=True)
class Config:
    """Everything that defines one ICA dark-matter run, by section."""

    source: SourceOptions = dataclasses.field(default_factory=SourceOptions)
    training: TrainingOptions = dataclasses.field(default_factory=TrainingOptions)
    planted: PlantedOptions = dataclasses.field(default_factory=PlantedOptions)
    collect: CollectOptions = dataclasses.field(default_factory=CollectOptions)
    ica: ICAOptions = dataclasses.field(default_factory=ICAOptions)
    compare: CompareOptions = dataclasses.field(default_factory=CompareOptions)
    interpret: InterpretOptions = dataclasses.field(default_factory=InterpretOptions)
    completeness: CompletenessOptions = dataclasses.field(default_factory=CompletenessOptions)
    run: RunOptions = dataclasses.field(default_factory=RunOptions)

    @property
    def trains_sae(self) -> bool:
        """True when no pretrained or local SAE is named: step 01 trains one unless the source
        brings its own (the planted oracle)."""
        return self.source.sae_release is None and self.source.sae_path is None

    def resolved_device(self) -> str:
        """``cuda`` when ``run.device == "auto"`` and CUDA is available, else the given device."""
        if self.run.device != "auto":
            return self.run.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Section name → its dataclass, in the order they appear in config.json.
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Config)}  # type: ignore[misc]
#: Field name → the section holding it (names are unique across sections).
FIELD_SECTION: dict[str, str] = {f.name: sec for sec, cls in SECTIONS.items() for f in fields(cls)}
assert len(FIELD_SECTION) == sum(len(fields(c)) for c in SECTIONS.values()), "field names must be unique"


def get(cfg: Config, name: str) -> Any:
    """The value of flat field ``name`` (e.g. ``"n_tokens"``)."""
    return getattr(getattr(cfg, FIELD_SECTION[name]), name)


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """``cfg`` with flat fields replaced (``{"n_tokens": 5000}``). Raises KeyError on an unknown name."""
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        by_section.setdefault(FIELD_SECTION[name], {})[name] = value
    return replace(cfg, **{sec: replace(getattr(cfg, sec), **v) for sec, v in by_section.items()})


def flat(cfg: Config) -> dict[str, Any]:
    """Every field by its flat name."""
    return {name: get(cfg, name) for name in FIELD_SECTION}



def as_flags(message: str) -> str:
    """A library's message as the command line says it: every backquoted config field becomes its
    flag (``"`text_files` x: no file"`` → ``"--text-files x: no file"``); other text is kept.

    The libraries (``darkmatter.sources``, ``analysis``, ``experiments``) name the parameter that is
    wrong, not a flag; the numbered scripts print their errors through this.
    """
    return re.sub(r"`([a-z][a-z0-9_]*)`",
                  lambda m: "--" + m.group(1).replace("_", "-") if m.group(1) in FIELD_SECTION else m.group(0), message)
