#!/usr/bin/env python
"""What step 06's causal tests cost: seconds per window pass and the passes the default design needs.

A window pass is one held-out window through the layers after the hook for one edit (the unit of
the causal tests' progress bars). The model is the tests' tiny HookedTransformer (8 layers,
d_model 32, n_ctx 64, seeded random weights, no tokenizer needed: random token windows with BOS
separators) read at ``blocks.6.hook_resid_pre``, or a local model folder (``--model``, the
``local_hooked`` kind). Prints, for the measured model: seconds per window pass of
``run_edits`` (prefix, reference and edits included, ``stack`` edits per forward pass), seconds per
window of the attribution pass (forward + backward), and the window passes of
:func:`darkmatter.analysis.causal.window_passes` for the given designs, with their time at the
measured rate and at a rate given by ``--rate`` (e.g. 0.27 s, SmolLM2-135M on 2 CPU cores).

    python benchmarks/bench_causal.py                       # tiny model, k = 50, 64 windows, T = 2 and 32
    python benchmarks/bench_causal.py --tested 2,8,32 --rate 0.27
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from darkmatter.analysis import causal
from darkmatter.pipeline.steps import causal_part
from darkmatter.sources.models import LoadedModel
from darkmatter.sources.splice import LMDownstream

TINY = dict(n_layers=8, d_model=32, n_heads=2, d_head=16, d_mlp=64, n_ctx=64, d_vocab=512, act_fn="gelu_new",
            normalization_type="LN", seed=0)
HOOK, LAYER = "blocks.6.hook_resid_pre", 6


def tiny_model() -> LoadedModel:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**TINY)).eval()
    return LoadedModel(model=model, tokenizer=None, bos_id=0, d_model=TINY["d_model"], n_layers=TINY["n_layers"],
                       description="tiny HookedTransformer (tests' config, random weights)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a local_hooked model folder (default: the tests' tiny model)")
    p.add_argument("--hook-name", default=HOOK)
    p.add_argument("--windows", type=int, default=16, help="windows timed")
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--edits", type=int, default=24, help="add-back edits timed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--design-windows", type=int, default=64)
    p.add_argument("--tested", default="2,32", help="tested components of the designs costed")
    p.add_argument("--null-draws", type=int, default=20, help="draws of each randomised baseline (--causal-null-draws)")
    p.add_argument("--rate", type=float, default=0.27, help="seconds per window pass of a second model to cost at")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        from darkmatter.sources.model_source import layer_of
        from darkmatter.sources.models import load_model

        model, layer = load_model("local_hooked", args.model, "cpu"), layer_of(args.hook_name)
    else:
        model, layer = tiny_model(), LAYER
    rng = np.random.default_rng(0)
    d_vocab = int(model.model.cfg.d_vocab)
    windows = rng.integers(1, d_vocab, size=(args.windows, args.context))
    windows[:, 0] = model.bos_id
    windows[::2, args.context // 2] = model.bos_id  # a document boundary in every other window
    d = model.d_model
    sae_w = torch.as_tensor(rng.standard_normal((d, 4 * d)) / np.sqrt(d), dtype=torch.float32)

    def reconstruct(x: torch.Tensor) -> torch.Tensor:  # a random ReLU autoencoder: the cost is the model's
        return torch.relu(x @ sae_w - 0.1) @ sae_w.T / 4

    k = 8
    mix = rng.standard_normal((d, k))
    parts = causal.Parts("ICA", np.linalg.pinv(mix), mix, np.zeros(d), np.arange(k))
    edits = [causal.add_back(f"add {i}", parts, np.array([i % k]), np.array([1.0 + i / 10]))
             for i in range(args.edits)]
    down = LMDownstream(model, args.hook_name, layer, windows, "cpu", batch_windows=4)
    next(down.batches(np.arange(1)))  # choose the route outside the timing
    done = [0]
    t0 = time.perf_counter()
    causal.run_edits(down, reconstruct, edits, stack=4, progress=lambda n: done.__setitem__(0, done[0] + n))
    per_pass = (time.perf_counter() - t0) / done[0]
    t0 = time.perf_counter()
    causal.attribution(down, reconstruct, [parts])
    per_attr = (time.perf_counter() - t0) / args.windows
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model: {model.description}, hook {args.hook_name} (route {down.route}); {args.threads} threads, "
          f"load average {load:.2f} at the start")
    print(f"run_edits: {done[0]} window passes ({args.windows} windows × ({args.edits} edits + reference)) of "
          f"{args.context} tokens: {per_pass * 1e3:.2f} ms per window pass")
    print(f"attribution (forward + backward): {per_attr * 1e3:.2f} ms per window = {per_attr / per_pass:.1f} passes")
    print(f"\ndefault design at k = {args.k}, {args.design_windows} windows, baseline draws "
          f"{causal_part.draws(args.null_draws)}:")
    print("| tested | splice + components | attribution (windows) | top-m | logit effect | window passes | "
          f"here | at {args.rate} s/pass |")
    print("|---|---|---|---|---|---|---|---|")
    for t in (int(v) for v in args.tested.split(",")):
        w = causal.window_passes(args.design_windows, args.k, t, sum(causal_part.draws(args.null_draws).values()))
        total = w["splice and components"] + w["top-m"] + w["logit effect"] + w["attribution"] * per_attr / per_pass
        print(f"| {t} | {w['splice and components']:,} | {w['attribution']:,} | {w['top-m']:,} | {w['logit effect']:,} "
              f"| {total:,.0f} | {total * per_pass:.0f} s | {total * args.rate / 60:.0f} min |")


if __name__ == "__main__":
    main()
