"""A language model read from a hook onward: the downstream of the causal tests
(:mod:`darkmatter.analysis.causal`).

The activations up to the hook are computed once per batch of held-out windows (the prefix);
each edit then runs only the layers after the hook:

* HookedTransformer at ``hook_resid_pre``: ``model(acts, start_at_layer=L)`` (TransformerLens);
* TransformerBridge (the offline SmolLM2): the bridge's blocks L.. with the keyword arguments
  (rotary embeddings, mask) their Hugging Face decoder layers received in a clean pass, then
  ``ln_final`` and ``unembed`` (the bridge itself refuses ``start_at_layer``; :func:`bridge_suffix`);
* anything else: the whole model with a hook that replaces the activation
  (``run_with_hooks``).

The route is checked once: it must reproduce the clean logits (else the whole-model route is
used), and :attr:`LMDownstream.route` says which ran.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from darkmatter.analysis.causal import Batch
from darkmatter.sources.models import LoadedModel

#: Largest |Δlogit| / max |logit| the prefix-cached route may differ from the whole model by.
ROUTE_TOL = 1e-4


@dataclass(frozen=True)
class BridgeSuffix:
    """The modules of a TransformerBridge that map the residual stream at a block's input to logits.

    Attributes:
        blocks: every block, in order (``bridge.blocks``); block ``L`` takes ``blocks.L.hook_resid_pre``.
        ln_final: the final norm (``bridge.ln_final``).
        unembed: the unembedding (``bridge.unembed``).
    """

    blocks: Sequence[torch.nn.Module]
    ln_final: torch.nn.Module
    unembed: torch.nn.Module


def bridge_suffix(model: Any) -> BridgeSuffix | None:
    """The modules the ``hf_layers`` route runs from the hook's block onward, or None when ``model``
    is not a TransformerBridge that has them.

    Why this adapter: TransformerBridge (TransformerLens 3.9) refuses ``start_at_layer``, since its
    forward hands the layer loop to the Hugging Face model, and TransformerLens documents no other
    way to run a bridge from a layer. It does expose its components under TransformerLens's
    architecture-independent names, ``blocks``, ``ln_final`` and ``unembed`` (the modules its hook
    names belong to; inside the wrapped model they replace the decoder layers, the final norm and
    ``lm_head``), and each block passes the keyword arguments it receives to its Hugging Face decoder
    layer. This function is the one place that relies on that structure: if TransformerLens changes
    it, the route is not chosen (the whole-model route gives the same numbers, slower), and
    ``tests/sources/test_bridge_layers.py`` fails, naming this function.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not isinstance(model, TransformerBridge):
        return None
    blocks, ln_final, unembed = (getattr(model, name, None) for name in ("blocks", "ln_final", "unembed"))
    if not isinstance(blocks, torch.nn.ModuleList) or not isinstance(ln_final, torch.nn.Module) \
            or not isinstance(unembed, torch.nn.Module):
        return None
    return BridgeSuffix(blocks=list(blocks), ln_final=ln_final, unembed=unembed)


class LMDownstream:
    """Next-token cross-entropy and KL of a language model from ``hook_name`` onward.

    Args:
        model: the loaded model; hook_name, layer: the hook and its block.
        windows: int64[n_windows, ctx] held-out token windows (BOS first where the run prepends it).
        device: where the model runs.
        max_norm_ratio: positions whose activation norm exceeds this multiple of the batch median
            are left clean, as step 02 leaves them out (None: none).
        batch_windows: windows per batch; description: the held-out windows, in words.
        units: int64[n_windows] each window's document (the clusters of the standard errors); None:
            each window its own.
    """

    loss_name = "next-token cross-entropy (nats/token)"
    divergence_name = "KL(clean ‖ edited) of the next-token distribution (nats/token)"
    output_name = "logit"

    def __init__(self, model: LoadedModel, hook_name: str, layer: int, windows: np.ndarray, device: str,
                 max_norm_ratio: float | None = None, batch_windows: int = 4, description: str = "held-out windows",
                 units: np.ndarray | None = None):
        self.model, self.hook_name, self.layer = model, hook_name, layer
        self.windows, self.device = np.asarray(windows, dtype=np.int64), device
        self.units = np.arange(len(self.windows)) if units is None else np.asarray(units, dtype=np.int64)
        if len(self.units) != len(self.windows):
            raise ValueError(f"units has {len(self.units)} entries for {len(self.windows)} windows")
        self.max_norm_ratio, self.batch_windows = max_norm_ratio, batch_windows
        self.route: str | None = None
        self.description = description
        self._kwargs: dict[tuple[int, int], dict[str, Any]] = {}

    def decode(self, token_id: int) -> str:
        return self.model.decode(token_id)

    def batches(self, select: np.ndarray | None = None) -> Iterator[Batch]:
        """Batches of the windows ``select`` (indices, in that order; None: all). ``splice``: not BOS
        and not massive; ``edit_tokens``: not BOS (SAELens's splice); scores: where a next token follows."""
        idx = np.arange(len(self.windows)) if select is None else np.asarray(select, dtype=np.int64)
        for start in range(0, len(idx), self.batch_windows):
            rows = idx[start:start + self.batch_windows]
            tokens = torch.as_tensor(self.windows[rows], device=self.device)
            x = self.model.activations(tokens, self.hook_name, self.layer)
            not_bos = tokens != self.model.bos_id
            splice = not_bos.clone()
            if self.max_norm_ratio is not None and bool(splice.any()):
                norms = x.norm(dim=-1)
                splice &= norms <= self.max_norm_ratio * norms[splice].median()
            score, score_tokens = splice.clone(), not_bos.clone()
            score[:, -1] = False
            score_tokens[:, -1] = False
            batch = Batch(x=x, splice=splice, score=score, tokens=tokens, unit=self.units[rows],
                          edit_tokens=not_bos, score_tokens=score_tokens)
            if self.route is None:
                self.route = self._choose_route(batch)
            yield batch

    @torch.no_grad()
    def outputs(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self._forward(acts, batch)

    def _forward(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        reps = len(acts) // len(batch.x)
        assert batch.tokens is not None
        tokens = batch.tokens.repeat(reps, 1)
        if self.route == "start_at_layer":
            return self.model.model(acts, start_at_layer=self.layer).float()
        if self.route == "hf_layers":
            return self._hf_suffix(acts, tokens)
        return self._whole(acts, tokens)

    def loss_gradient(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        """∂/∂acts of the next-token cross-entropy summed over ``batch.score``: float32[b, ctx, d_model]
        (the layers after the hook with autograd on; the model's weights get no gradient)."""
        assert batch.tokens is not None
        with torch.enable_grad():
            leaf = acts.detach().clone().requires_grad_(True)
            logp = torch.log_softmax(self._forward(leaf, batch).float(), -1)
            nll = -logp[:, :-1].gather(-1, batch.tokens[:, 1:, None]).squeeze(-1)
            loss = (nll * batch.score[:, :-1]).sum()
            (grad,) = torch.autograd.grad(loss, leaf)
        return grad

    def reference(self, clean: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The clean logits, next-token probabilities p (float32[b, ctx, d_vocab] each) and
        log-partition lse (float32[b, ctx])."""
        logits = clean.float()
        lse = torch.logsumexp(logits, -1)
        return logits, torch.exp(logits - lse[..., None]), lse

    def score(self, out: torch.Tensor, batch: Batch,
              reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
              rows: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the next token and KL(clean ‖ edited), per position: float32[e·b, ctx] each.

        Per edit, from the change of the logits d = out − clean: the log-partition moves by
        Δ = log Σ p e^d, so KL = Δ − Σ p d and the cross-entropy is lse + Δ − out[next token].
        Both are exact rewrites of the log-softmax forms, accurate for small edits (nothing of the
        logits' size cancels: against float64, cross-entropy within 1.9e-6 where the log-softmax
        form gave 2.0e-5). They run ``rows`` positions at a time, so every d_vocab-sized temporary
        stays in the CPU's cache: at 16 windows × 49k tokens, 0.10 s a call against 0.48 s for whole
        edits and 0.52 s for the log-softmax of every stacked edit."""
        assert batch.tokens is not None
        logits, p, lse = reference
        b, ctx = batch.tokens.shape
        n, V = b * ctx, out.shape[-1]
        o = out.float().reshape(-1, n, V)
        L, P, LSE = logits.reshape(n, V), p.reshape(n, V), lse.reshape(n)
        following = torch.nn.functional.pad(batch.tokens[:, 1:], (0, 1)).reshape(n, 1)
        nll = torch.empty(len(o), n, device=out.device)
        kl = torch.empty(len(o), n, device=out.device)
        for j, e in enumerate(o):
            for s in range(0, n, rows):
                at = slice(s, s + rows)
                d = e[at] - L[at]
                top = d.amax(-1, keepdim=True)
                # products and sums, not einsum: its matmul reduction lost ~5e-6 here, pairwise sums 4e-9
                shift = torch.log((P[at] * torch.exp_(d - top)).sum(-1)) + top[:, 0]
                kl[j, at] = shift - (P[at] * d).sum(-1)
                nll[j, at] = LSE[at] + shift - e[at].gather(-1, following[at]).squeeze(-1)
        nll = nll.reshape(-1, b, ctx)
        nll[:, :, -1] = 0.0  # no next token
        return nll.reshape(-1, ctx), kl.clamp_min(0.0).reshape(-1, ctx)

    # ---- routes -------------------------------------------------------------------------------
    def _choose_route(self, batch: Batch) -> str:
        assert batch.tokens is not None
        with torch.no_grad():
            reference = self.model.model(batch.tokens).float()
        scale = float(reference.abs().max())
        candidates = []
        if self.hook_name.endswith("hook_resid_pre") and hasattr(self.model.model, "blocks") and \
                type(self.model.model).__name__ == "HookedTransformer":
            candidates.append("start_at_layer")
        if self.hook_name.endswith("hook_resid_pre") and bridge_suffix(self.model.model) is not None:
            candidates.append("hf_layers")
        for route in candidates:
            self.route = route
            try:
                got = self.outputs(batch.x, batch)
            except Exception:  # noqa: BLE001 - an unsupported route falls back to the whole model
                continue
            if float((got - reference).abs().max()) <= ROUTE_TOL * max(scale, 1.0):
                return route
        return "whole_model"

    def _hf_suffix(self, acts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        parts = bridge_suffix(self.model.model)
        assert parts is not None, "the hf_layers route is chosen only for a bridge with blocks, ln_final, unembed"
        key = (int(tokens.shape[0]), int(tokens.shape[1]))
        if key not in self._kwargs:
            self._kwargs[key] = self._capture(parts, tokens)
        h = acts
        for block in parts.blocks[self.layer:]:
            out = block(h, **self._kwargs[key])
            h = out[0] if isinstance(out, tuple) else out
        return parts.unembed(parts.ln_final(h)).float()

    def _capture(self, parts: BridgeSuffix, tokens: torch.Tensor) -> dict[str, Any]:
        """The keyword arguments the block at the hook receives for windows of this shape."""
        got: dict[str, Any] = {}

        class Stop(Exception):
            pass

        def grab(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            got.update({k: v for k, v in kwargs.items() if k != "hidden_states"})
            raise Stop

        handle = parts.blocks[self.layer].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.model.model(tokens)
        except Stop:
            pass
        finally:
            handle.remove()
        got["past_key_values"], got["use_cache"] = None, False
        return got

    def _whole(self, acts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        def replace(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return acts.to(act.dtype)

        return self.model.model.run_with_hooks(tokens, fwd_hooks=[(self.hook_name, replace)]).float()
