#!/usr/bin/env python
"""1M tokens end to end on one GPU: GPT-2-small-shaped transformer → SAE → residual → ICA.

The stages, each timed (CUDA synchronised):
  model    a GPT-2-small-shaped transformer with random weights (12 blocks, d_model 768, 12 heads,
           d_mlp 3,072, vocabulary 50,257, context 128) in plain PyTorch, run on random tokens up
           to ``blocks.6.hook_resid_pre`` (the forward stops after 6 blocks). TransformerLens and
           SAELens are not installed on the GPU image, which has no package index; the block
           is GPT-2's (pre-LayerNorm, causal attention, GELU MLP).
  SAE      a 24,576-latent ReLU SAE with SAELens's standard encode/decode
           (f = ReLU((x − b_dec) W_enc + b_enc), x̂ = f W_dec + b_dec); random weights, with
           b_enc set so that L0 ≈ 50 as in ``gpt2-small-res-jb``.
  collect  :func:`darkmatter.sources.collect.collect_rows` streams activations and residuals to float32
           memmaps and keeps the SAE's running statistics (FVU, L0, feature moments).
  moments  one pass over the residual memmap on the GPU: mean and float64 covariance (the
           same sums as :func:`darkmatter.analysis.stats.streaming_moments`).
  ica      PCA whitening to k = 100 from that covariance, then
           :func:`darkmatter.analysis.ica_engine.fastica_torch` on CUDA (3 seeds, restarts on random
           halves, as step 04).

    python benchmarks/bench_gpu.py --tokens 1000000 --out /tmp/bench_gpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    """GPT-2 block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = torch.nn.LayerNorm(d_model)
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.out = torch.nn.Linear(d_model, d_model)
        self.ln2 = torch.nn.LayerNorm(d_model)
        self.up = torch.nn.Linear(d_model, d_mlp)
        self.down = torch.nn.Linear(d_mlp, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))


class GPT2Shaped(torch.nn.Module):
    def __init__(self, n_layers=12, d_model=768, n_heads=12, d_mlp=3072, d_vocab=50257, n_ctx=1024, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.W_E = torch.nn.Parameter(torch.randn(d_vocab, d_model) * 0.02)
        self.W_pos = torch.nn.Parameter(torch.randn(n_ctx, d_model) * 0.01)
        self.blocks = torch.nn.ModuleList(Block(d_model, n_heads, d_mlp) for _ in range(n_layers))

    @torch.no_grad()
    def resid_pre(self, tokens: torch.Tensor, layer: int) -> torch.Tensor:
        """float32[batch, ctx, d_model] at blocks.{layer}.hook_resid_pre (runs blocks 0..layer-1)."""
        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        for block in self.blocks[:layer]:
            x = block(x)
        return x


class StandardSAE:
    """SAELens's standard SAE math with ``apply_b_dec_to_input``; W_dec: [d_sae, d_model]."""

    def __init__(self, d_model: int, d_sae: int, device: str, seed: int = 1):
        g = torch.Generator(device="cpu").manual_seed(seed)
        W_dec = torch.randn(d_sae, d_model, generator=g)
        self.W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(device)
        self.W_enc = self.W_dec.T.contiguous()
        self.b_enc = torch.zeros(d_sae, device=device)
        self.b_dec = torch.zeros(d_model, device=device)
        self.cfg = type("Cfg", (), {"d_sae": d_sae, "d_in": d_model})()

    def calibrate(self, x: torch.Tensor, l0: float) -> None:
        """Per-latent b_enc so each latent fires on l0/d_sae of the rows in x (L0 ≈ l0)."""
        self.b_dec = x.mean(0)
        pre = (x - self.b_dec) @ self.W_enc
        self.b_enc = -torch.quantile(pre, 1 - l0 / pre.shape[1], dim=0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--d-sae", type=int, default=24_576)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128, help="windows of 128 tokens per forward")
    ap.add_argument("--chunk", type=int, default=16_384, help="rows per SAE chunk")
    ap.add_argument("--out", default="/tmp/bench_gpu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    from darkmatter.analysis import ica
    from darkmatter.analysis.ica_engine import fastica_torch
    from darkmatter.analysis.stats import pca_from_cov
    from darkmatter.sources.base import RowBatch
    from darkmatter.sources.collect import Throughput, collect_rows

    dev = args.device
    torch.backends.cuda.matmul.allow_tf32 = True
    ctx = 128
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def now() -> float:
        if dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    t = now()
    model = GPT2Shaped().to(dev).eval()
    sae = StandardSAE(768, args.d_sae, dev)
    gen = torch.Generator(device="cpu").manual_seed(0)
    sae.calibrate(model.resid_pre(torch.randint(0, 50257, (32, ctx), generator=gen).to(dev), args.layer)
                  [:, 1:].reshape(-1, 768), l0=50)
    times["setup"] = now() - t

    n = args.tokens
    acts = np.lib.format.open_memmap(out / "activations.npy", "w+", np.float32, (n, 768))
    resid = np.lib.format.open_memmap(out / "residuals.npy", "w+", np.float32, (n, 768))
    index = np.lib.format.open_memmap(out / "token_index.npy", "w+", np.int32, (n, 2))
    clock = Throughput()

    def rows():
        done, w0 = 0, 0
        while done < n:
            tokens = torch.randint(0, 50257, (args.batch, ctx), generator=gen).to(dev)
            t0 = now()
            x = model.resid_pre(tokens, args.layer)[:, 1:]  # BOS position dropped, as in step 02
            clock.model += now() - t0
            m = min(x.shape[0] * x.shape[1], n - done)
            win, pos = np.divmod(np.arange(m), ctx - 1)
            yield RowBatch(x=x.reshape(-1, 768)[:m], index=np.stack([win + w0, pos + 1], 1).astype(np.int32))
            done += m
            w0 += args.batch

    t = now()
    running = collect_rows(rows(), sae, args.chunk, acts, resid, index, clock).stats
    clock.total = now() - t
    times["collect"] = clock.total
    for a in (acts, resid, index):
        a.flush()
    sae_stats = running.finish()

    t = now()
    s1 = torch.zeros(768, dtype=torch.float64, device=dev)
    gram = torch.zeros(768, 768, dtype=torch.float64, device=dev)
    for s in range(0, n, 131072):
        c = torch.as_tensor(np.asarray(resid[s:s + 131072])).to(dev, torch.float64)
        s1 += c.sum(0)
        gram += c.T @ c
    mean = (s1 / n).cpu().numpy()
    cov = (gram / n).cpu().numpy() - np.outer(mean, mean)
    times["moments"] = now() - t

    t = now()
    white = ica.pca_whitening(pca_from_cov(cov), mean, args.k)
    Wt = torch.as_tensor(white.whitener.T, dtype=torch.float32, device=dev)
    mt = torch.as_tensor(mean, dtype=torch.float32, device=dev)
    z = torch.empty(n, args.k, device=dev)
    for s in range(0, n, 131072):
        z[s:s + 131072] = (torch.as_tensor(np.asarray(resid[s:s + 131072])).to(dev) - mt) @ Wt
    fits = []
    for i, seed in enumerate((42, 43, 44)):
        zi = z if i == 0 else z[torch.as_tensor(np.sort(np.random.default_rng([seed, 1012]).choice(
            n, n // 2, replace=False)), device=dev)]
        fits.append(fastica_torch(zi, seed=seed, device=dev))
    dirs = [ica.mixing_directions(f.W, white) for f in fits]
    stab = ica.stability(dirs[0], dirs[1:])
    times["ica"] = now() - t
    total = sum(times.values())
    report = {
        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "tokens": n, "d_sae": args.d_sae, "k": args.k, "seconds": times, "seconds_total": total,
        "throughput": dataclasses.asdict(clock.record(n)), "sae": dataclasses.asdict(sae_stats),
        "ica": [{"seed": f.seed, "n_iter": f.n_iter, "phases": f.phases, "converged": f.converged,
                 "stopped_on_stability": f.stopped_on_stability, "n_settled": f.n_settled} for f in fits],
        "n_stable_0.9": int((stab >= 0.9).sum()),
        "pca_variance_kept": white.explained,
    }
    print(json.dumps(report, indent=1, default=float))
    print(f"\n{n:,} tokens: setup {times['setup']:.1f} s, collect {times['collect']:.1f} s "
          f"(model {clock.model:.1f}, SAE {clock.sae:.1f}, writes {clock.write:.1f}), moments "
          f"{times['moments']:.1f} s, ICA {times['ica']:.1f} s; total {total:.1f} s "
          f"({'under' if total < 180 else 'OVER'} 3 minutes)")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
