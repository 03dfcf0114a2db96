"""The eight pipeline steps: read inputs from the store, call the analysis, write outputs.

Each ``stepN_*`` function is what ``scripts/0N_*.py`` runs. Inputs are checked
against the recorded config before any work; every output of a step lands
together when the step succeeds (see :meth:`OutputStore.transaction`).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkmatter import compare, ica, interpret, planted, plots, report, stats
from darkmatter.collect import collect, collect_rows, hook_rows
from darkmatter.config import Config, run_id
from darkmatter.errors import DarkMatterError
from darkmatter.sources import LoadedModel, load_model, load_sae, oriented_decoder
from darkmatter.store import PRODUCER, OutputStore
from darkmatter.text import documents, token_windows

GAUSS_TAIL_3SD = 0.0026997960632601866  # P(|N(0,1)| > 3)
ALIVE_FREQUENCY = 1e-3  # SAE features firing on fewer tokens are left out of the kurtosis comparison
QUANTILE_SAMPLE = 100_000
GAUSSIAN_TEST_ROWS = 20_000


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
def _record_config(store: OutputStore, cfg: Config) -> None:
    """Rewrite config.json when this step changed a field it owns (e.g. --n-components)."""
    if store.exists("config.json") and store.read_json("config.json") == cfg.to_dict():
        return
    store.write_json("config.json", cfg.to_dict())


#: JSON outputs stamped with ``run_id`` and the step that writes them.
STAMPED = {"setup.json": 1, "sae_stats.json": 2, "diagnostics.json": 3, "ica.json": 4,
           "similarity.json": 5, "groundtruth.json": 5, "interpretations.json": 6, "statistics.json": 7}


def _read_inputs(store: OutputStore, cfg: Config, *names: str) -> list[dict[str, Any]]:
    """Read JSON inputs and check each was written under the current config.

    Raises:
        DarkMatterError: a file is missing, or stamped by a differently configured run.
    """
    out = []
    for name in names:
        data = store.read_json(name)
        if data.get("run_id") != run_id(cfg, STAMPED[name]):
            raise DarkMatterError(
                f"{store.path(name)} was written by a differently configured run: rerun "
                f"scripts/{PRODUCER[name]} and the steps after it")
        out.append(data)
    return out


def _write_stamped(store: OutputStore, cfg: Config, name: str, data: dict[str, Any]) -> None:
    store.write_json(name, {"run_id": run_id(cfg, STAMPED[name]), **data})


def _decoder(sae: Any, d_model: int) -> np.ndarray:
    W_dec, _ = oriented_decoder(sae.W_dec.detach().float().cpu().numpy(), d_model)
    return W_dec


def _windows(cfg: Config, model: LoadedModel, part: str) -> Iterator[np.ndarray]:
    """Token windows of the SAE-training or the analysed part of the text (see ``documents``)."""
    return token_windows(documents(cfg, part), model.tokenizer, cfg.context_size, model.bos_id,
                         cfg.prepend_bos)


def _load_arrays(store: OutputStore, cfg: Config, names: tuple[str, ...]) -> list[np.ndarray]:
    """Memmap float arrays written by step 02 and check they match the recorded run."""
    setup, _ = _read_inputs(store, cfg, "setup.json", "sae_stats.json")
    d_model = setup["d_model"]
    arrays = [store.load_npy(name) for name in names]
    for name, arr in zip(names, arrays):
        if arr.shape != (cfg.n_tokens, d_model):
            raise DarkMatterError(
                f"{store.path(name)} has shape {arr.shape} but this run expects "
                f"({cfg.n_tokens}, {d_model}): rerun scripts/02_collect_activations.py")
    return arrays


def _moments(array: np.ndarray, name: str, chunk: int, with_cov: bool = True) -> stats.Moments:
    try:
        return stats.streaming_moments(array, chunk, with_cov=with_cov, desc=f"moments of {name}")
    except ValueError as exc:
        raise DarkMatterError(f"{name} is unusable ({exc}): rerun "
                              "scripts/02_collect_activations.py and check the model/SAE") from exc


def _environment(device: str) -> dict[str, Any]:
    import importlib.metadata as md

    import psutil

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": psutil.cpu_count(), "ram_free_gb": round(psutil.virtual_memory().available / 2**30, 2),
        "device": device,
    }
    for pkg in ("torch", "sae-lens", "transformer-lens", "transformers", "numpy", "scikit-learn", "scipy"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        env.update(gpu=torch.cuda.get_device_name(), gpu_free_gb=round(free / 2**30, 2),
                   gpu_total_gb=round(total / 2**30, 2))
    return env


# ---------------------------------------------------------------------------------------------
# 01 setup and load
# ---------------------------------------------------------------------------------------------
def _training_activations(cfg: Config, model: LoadedModel | None, device: str) -> tuple[torch.Tensor, int]:
    """float32[sae_train_tokens, d_model] activations to train the SAE on (on the CPU), and the
    number of text windows they came from (0 for planted data, whose "train" stream is disjoint
    from the analysed one)."""
    if model is None:
        x, _ = planted.sample(cfg.planted_spec(), "train", cfg.sae_train_tokens)
        return torch.as_tensor(x), 0
    used: list[np.ndarray] = []
    acts = torch.cat([rows.cpu() for rows, _, _ in hook_rows(
        model, _windows(cfg, model, "train"), cfg.hook_name, cfg.layer, cfg.batch_size, device,
        cfg.sae_train_tokens, cfg.max_norm_ratio, used, desc="SAE training activations")])
    return acts, len(used)


def _train(cfg: Config, store: OutputStore, model: LoadedModel | None, d_model: int,
           device: str) -> tuple[Path, int]:
    """Train the configured SAE architecture; stage sae/, sae_best/, sae_training.json and
    sae_history.json. Returns (the staged folder of the final SAE, training windows used)."""
    from darkmatter.training import train_sae

    t0 = time.perf_counter()
    acts, n_windows = _training_activations(cfg, model, device)
    t1 = time.perf_counter()
    sae_dir = store.staged_dir("sae")
    result = train_sae(acts, arch=cfg.sae_arch, d_sae=cfg.sae_expansion * d_model, l0_target=cfg.sae_l0,
                       total_samples=cfg.sae_train_samples, lr=cfg.sae_lr, seed=cfg.seed, device=device,
                       out_dir=sae_dir, best_dir=store.staged_dir("sae_best"),
                       batch_size=cfg.sae_batch_size)
    record = dataclasses.asdict(result)
    history = {"history": record.pop("history"), "evals": record.pop("evals")}
    training = {"train_windows": n_windows, "n_train_tokens": len(acts),
                "seconds_activations": t1 - t0, "seconds_training": time.perf_counter() - t1, **record}
    store.write_json("sae_training.json", training)
    store.write_json("sae_history.json", history)
    v = result.validation
    print(f"trained {cfg.sae_arch} SAE (d_sae {result.d_sae}): validation FVU {v['fvu']:.4f}, "
          f"L0 {v['mean_l0']:.1f} (target {cfg.sae_l0:g}), dead {v['dead_fraction']:.1%} "
          f"({result.steps} steps)")
    return sae_dir, n_windows


def step1_setup(cfg: Config, store: OutputStore) -> None:
    """Report the environment, load model and SAE (training one if none is named), check shapes.

    Planted runs (``--preset planted``) have no model: activations come from
    :mod:`darkmatter.planted`, and the SAE is either an oracle that knows all but the
    withheld features or one trained with too little capacity."""
    device = cfg.resolved_device()
    env = _environment(device)
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    model: LoadedModel | None = None
    if cfg.planted:
        spec = cfg.planted_spec()
        hook_width = spec.d_model
        description = planted.describe(spec, cfg.planted_mode)
    else:
        model = load_model(cfg, device)
        model.check_hook(cfg.hook_name)
        probe = torch.tensor([[model.bos_id] * 2], device=device)
        hook_width = model.activations(probe, cfg.hook_name, cfg.layer).shape[-1]
        description = model.description
    print(f"model: {description}; hook {cfg.hook_name} width {hook_width}")

    with store.transaction():
        train_windows = 0
        made = {"sae_training.json", "sae_history.json", "sae_best", "planted_directions.npy"}
        if cfg.planted:
            store.save_npy("planted_directions.npy", spec.directions().astype(np.float32))
        if cfg.planted and cfg.planted_mode == "withheld":
            sae_dir = store.staged_dir("sae")
            planted.oracle_sae(spec, device).save_model(str(sae_dir))
            sae = load_sae(cfg, device, trained_path=sae_dir)
            made = {"planted_directions.npy"}
        elif cfg.trains_sae:
            sae_dir, train_windows = _train(cfg, store, model, hook_width, device)
            sae = load_sae(cfg, device, trained_path=sae_dir)
            made |= {"sae"}
        else:
            sae = load_sae(cfg, device)
            made = set()
        for stale in {"sae", "sae_best", "sae_training.json", "sae_history.json",
                      "planted_directions.npy"} - made:  # left by an earlier, different run
            if store.exists(stale):
                store.discard(stale)

        raw_W_dec = sae.W_dec.detach().cpu().numpy()
        _, transposed = oriented_decoder(raw_W_dec, hook_width)
        if int(sae.cfg.d_in) != hook_width:
            raise DarkMatterError(
                f"the SAE reads d_in={sae.cfg.d_in} but {cfg.hook_name} is {hook_width} wide: "
                "pick an SAE trained on this model and hook (--sae-id / --sae-path / --hook-name)")
        sae_hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
        if sae_hook and sae_hook != cfg.hook_name and not cfg.planted:
            print(f"warning: the SAE was trained on {sae_hook}, not {cfg.hook_name}")
        setup = {
            "environment": env,
            "model": description, "d_model": hook_width,
            "n_layers": model.n_layers if model else 0,
            "d_vocab": int(model.model.cfg.d_vocab) if model else None,
            "hook_name": cfg.hook_name, "layer": None if cfg.planted else cfg.layer,
            "bos_id": model.bos_id if model else None,
            "sae": {"source": (f"{cfg.sae_release}/{cfg.sae_id}" if cfg.sae_release else
                               cfg.sae_path or str(store.path("sae"))),
                    "class": type(sae).__name__, "d_sae": int(sae.cfg.d_sae), "d_in": int(sae.cfg.d_in),
                    "W_dec_shape": list(raw_W_dec.shape), "W_dec_transposed": transposed,
                    "hook_name": sae_hook,
                    "made_by": ("oracle: the known planted directions" if "sae" not in made and cfg.planted
                                else f"trained here ({cfg.sae_arch})" if "sae" in made else "pretrained")},
            "text": ("none: planted activations" if cfg.planted else cfg.text_files or cfg.dataset or
                     "bundled Python documentation (pydoc_data + stdlib docstrings)"),
            "sae_train_windows": train_windows,
            "text_split": ("planted: SAE training and analysis rows come from disjoint random streams"
                           if cfg.planted else
                           "even-numbered documents train the SAE, odd-numbered ones are analysed"
                           if cfg.trains_sae else "every document is analysed"),
        }
        if cfg.planted:
            setup["planted"] = {**dataclasses.asdict(spec), "mode": cfg.planted_mode,
                                "withheld": spec.withheld().tolist()}
        _write_stamped(store, cfg, "setup.json", setup)
        store.write_json("config.json", cfg.to_dict())
    print(f"SAE: {setup['sae']['class']} d_sae {setup['sae']['d_sae']}, W_dec {tuple(raw_W_dec.shape)}")


# ---------------------------------------------------------------------------------------------
# 02 collect activations
# ---------------------------------------------------------------------------------------------
def step2_collect(cfg: Config, store: OutputStore) -> None:
    """Text → windows → activations → SAE reconstruction (chunked) → residual, streamed to memmaps.

    Planted runs draw their rows from :func:`darkmatter.planted.tensor_rows` instead; their
    token_index.npy holds (row, 0) and no tokens.npy is written."""
    (setup,) = _read_inputs(store, cfg, "setup.json")
    device = cfg.resolved_device()
    model = None
    if not cfg.planted:
        model = load_model(cfg, device)
        model.check_hook(cfg.hook_name)
    sae = load_sae(cfg, device, trained_path=store.path("sae"))
    if int(sae.cfg.d_in) != setup["d_model"]:
        raise DarkMatterError("the SAE no longer matches setup.json: rerun scripts/01_setup_and_load.py")
    d = setup["d_model"]
    with store.transaction():
        _record_config(store, cfg)
        acts = store.open_npy("activations.npy", (cfg.n_tokens, d), np.float32)
        resid = store.open_npy("residuals.npy", (cfg.n_tokens, d), np.float32)
        index = store.open_npy("token_index.npy", (cfg.n_tokens, 2), np.int32)
        if model is None:
            running, _ = collect_rows(planted.tensor_rows(cfg.planted_spec(), "analysis", cfg.n_tokens, device),
                                      sae, cfg.sae_chunk_size, acts, resid, index)
            sae_stats = {**running.finish(), "massive_tokens_excluded": 0, "bos_positions_excluded": 0}
            moments = running.feature_moments.cpu().numpy()
            windows = None
        else:
            sae_stats, moments, windows = collect(
                model, sae, _windows(cfg, model, "analysis"), cfg.hook_name, cfg.layer,
                cfg.n_tokens, cfg.batch_size, cfg.sae_chunk_size, device, acts, resid, index,
                cfg.max_norm_ratio)
        for arr in (acts, resid, index):
            arr.flush()
        del acts, resid, index
        if windows is not None:
            store.save_npy("tokens.npy", windows)
            sae_stats.update(n_windows=len(windows), context_size=cfg.context_size)
        elif store.exists("tokens.npy"):
            store.discard("tokens.npy")
        store.save_npy("sae_feature_moments.npy", moments)
        _write_stamped(store, cfg, "sae_stats.json", sae_stats)
    if windows is not None:
        print(f"{len(windows)} windows of {cfg.context_size}; {cfg.n_tokens:,} tokens analysed; excluded: "
              f"{sae_stats['bos_positions_excluded']:,} BOS positions")
        print(f"  and {sae_stats['massive_tokens_excluded']:,} tokens with massive activations "
              f"(norm > {cfg.max_norm_ratio}× batch median)")
    else:
        print(f"{cfg.n_tokens:,} planted rows analysed")
    print(f"SAE on the analysed tokens: FVU {sae_stats['fvu']:.4f}, L0 {sae_stats['mean_l0']:.1f}, "
          f"dead {sae_stats['dead_fraction']:.1%}, mean cos(x, x̂) {sae_stats['mean_cos_x_xhat']:.3f}")
    tp = sae_stats.get("throughput")
    if tp:
        print(f"throughput: model {tp['tokens_per_second_model']:,.0f} tok/s, model + SAE "
              f"{tp['tokens_per_second_model_and_sae']:,.0f} tok/s, end to end "
              f"{tp['tokens_per_second_end_to_end']:,.0f} tok/s (model {tp['seconds_model']:.1f} s, SAE "
              f"{tp['seconds_sae']:.1f} s, writes {tp['seconds_write']:.1f} s of {tp['seconds_total']:.1f} s)")


# ---------------------------------------------------------------------------------------------
# 03 diagnostics
# ---------------------------------------------------------------------------------------------
def step3_diagnostics(cfg: Config, store: OutputStore) -> None:
    """FVU, per-dimension excess kurtosis, Gaussianity test and full-spectrum PCA of the residual."""
    acts, resid = _load_arrays(store, cfg, ("activations.npy", "residuals.npy"))
    chunk = max(cfg.sae_chunk_size, 16384)
    m_act = _moments(acts, "activations.npy", chunk)
    m_res = _moments(resid, "residuals.npy", chunk)
    n = m_res.n
    fvu = m_res.sum_sq / (n * m_act.total_variance)
    se = stats.kurtosis_standard_error(n)
    pca_res = stats.pca_from_cov(m_res.cov)
    pca_act = stats.pca_from_cov(m_act.cov)
    marks = {f: pca_res.n_for(f) for f in (0.9, 0.95, 0.99)}

    rows = stats.random_rows(n, GAUSSIAN_TEST_ROWS, cfg.seed)
    res_sample = np.asarray(resid[rows], dtype=np.float64)
    top = min(cfg.max_components, pca_res.components.shape[0])
    pc_proj = (res_sample - m_res.mean) @ pca_res.components[:top].T
    from scipy.stats import kurtosis

    pc_kurt = kurtosis(pc_proj, axis=0)
    kurt = m_res.excess_kurtosis
    surrogate = stats.GaussianSurrogate(m_res.mean, m_res.cov, n, cfg.seed)
    m_sur = _moments(surrogate, "the Gaussian surrogate", chunk, with_cov=False)
    floor = float(np.abs(m_sur.excess_kurtosis).max())
    non_gaussian = bool(np.median(kurt) > max(0.5, 5 * se))
    verdict = (
        f"residual median excess kurtosis {np.median(kurt):.2f} (mean {kurt.mean():.2f}; Gaussian 0 ± {se:.3f}): "
        + ("the residual is heavy-tailed, not Gaussian noise; ICA can look for structure in it."
           if non_gaussian else
           "the residual is close to Gaussian per dimension; ICA may still find non-Gaussian "
           "directions, but expect few.")
        + f" {int((kurt > floor).sum())} of {len(kurt)} dimensions exceed the largest |excess kurtosis| "
        f"({floor:.3f}) of a Gaussian surrogate with the same covariance and {n:,} tokens."
        + f" PCA: {marks[0.9]} / {marks[0.95]} / {marks[0.99]} of {pca_res.components.shape[0]} components "
        f"hold 90/95/99% of residual variance; default k = {min(marks[0.9], cfg.max_components)}."
    )
    diagnostics = {
        "n_tokens": n, "d_model": resid.shape[1], "fvu": fvu,
        "residual_variance_fraction": m_res.total_variance / m_act.total_variance,
        "kurtosis_standard_error": se,
        "residual_excess_kurtosis": _summary(kurt),
        "activation_excess_kurtosis": _summary(m_act.excess_kurtosis),
        "gaussian_surrogate_excess_kurtosis": {
            **_summary(m_sur.excess_kurtosis), "max_abs": floor,
            "n_residual_dims_above_max_abs": int((kurt > floor).sum()),
            "what": "per-dimension excess kurtosis of N(residual mean, residual covariance) at the same "
                    "number of tokens: the sampling noise floor"},
        "residual_top_pc_excess_kurtosis": {**_summary(pc_kurt), "n_components": top,
                                            "n_sample": len(rows)},
        "gaussianity_residual": stats.gaussianity_test(res_sample),
        "gaussianity_activations": stats.gaussianity_test(np.asarray(acts[rows], dtype=np.float64)),
        "pca_components_for": {f"{int(f * 100)}%": v for f, v in marks.items()},
        "residual_explained_ratio_first_10": pca_res.explained_ratio[:10].tolist(),
        "residual_is_non_gaussian": non_gaussian,
        "suggested_k": min(marks[0.9], cfg.max_components),
        "verdict": verdict,
    }
    title = f"{cfg.hook_name}, {n:,} tokens"
    with store.transaction():
        store.save_npy("residual_mean.npy", m_res.mean)
        store.save_npy("pca_eigenvalues.npy", pca_res.eigenvalues)
        store.save_npy("pca_components.npy", pca_res.components)
        _write_stamped(store, cfg, "diagnostics.json", diagnostics)
        store.save_figure("residual_kurtosis.png", plots.residual_kurtosis(
            kurt, m_act.excess_kurtosis, se, f"SAE residual vs activations: {title}", floor))
        store.save_figure("residual_pca.png", plots.residual_pca(
            pca_res.eigenvalues, pca_act.eigenvalues, marks, f"PCA of the SAE residual: {title}"))
    print(f"FVU {fvu:.4f}")
    print(f"verdict: {verdict}")


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "median": float(np.median(values)),
            "min": float(np.min(values)), "max": float(np.max(values))}


# ---------------------------------------------------------------------------------------------
# 04 ICA
# ---------------------------------------------------------------------------------------------
def step4_ica(cfg: Config, store: OutputStore) -> None:
    """PCA-whiten the residual to k components, FastICA over seeds, match, fix signs, write sources."""
    (resid,) = _load_arrays(store, cfg, ("residuals.npy",))
    (diag,) = _read_inputs(store, cfg, "diagnostics.json")
    store.require("residual_mean.npy", "pca_eigenvalues.npy", "pca_components.npy")
    pca = stats.PCA(store.load_npy("pca_eigenvalues.npy", mmap=False),
                    store.load_npy("pca_components.npy", mmap=False))
    k = cfg.n_components or min(diag["pca_components_for"]["90%"], cfg.max_components)
    k_rule = "--n-components" if cfg.n_components else "PCA 90% rule, capped at --max-components"
    try:
        white = ica.pca_whitening(pca, store.load_npy("residual_mean.npy", mmap=False), k)
    except ValueError as exc:
        raise DarkMatterError(f"{exc}; pass a smaller --n-components") from exc

    n = resid.shape[0]
    fit_rows = (np.arange(n) if not cfg.ica_max_tokens or cfg.ica_max_tokens >= n
                else stats.random_rows(n, cfg.ica_max_tokens, cfg.seed))
    chunk = max(cfg.sae_chunk_size, 16384)
    z = np.empty((len(fit_rows), k), dtype=np.float32)  # n × k × 4 bytes: the one array 04 holds whole
    for s in range(0, len(fit_rows), chunk):
        z[s:s + chunk] = white.apply(resid[fit_rows[s:s + chunk]])
    print(f"FastICA on {len(z):,} tokens × k={k} ({white.explained:.1%} of residual variance), "
          f"seeds {cfg.seed}..{cfg.seed + cfg.ica_seeds - 1}")
    device = cfg.resolved_device()
    fits = ica.fit_seeds(z, [cfg.seed + i for i in range(cfg.ica_seeds)], cfg.ica_max_iter, cfg.ica_tol,
                         cfg.ica_resample, cfg.ica_backend, device)
    seed_records = [f.record(len(z) if i == 0 else int(cfg.ica_resample * len(z))) for i, f in enumerate(fits)]
    for r in seed_records:
        how = (f"stopped on stability with {r['n_settled']}/{k} settled"
               f"{' (settled ones converged)' if r['settled_converged'] else ''}"
               if r["stopped_on_stability"] else f"converged={r['converged']}")
        change = "" if r["final_change"] is None else f", final change {r['final_change']:.1e}"
        print(f"  seed {r['seed']} ({r['n_tokens']:,} tokens): {r['n_iter']} iterations, {how}{change}")
    dirs = [ica.mixing_directions(f.W, white) for f in fits]  # seed order, for matching
    stab = ica.stability(dirs[0], dirs[1:])
    sample = z[: min(len(z), QUANTILE_SAMPLE)].astype(np.float64) @ fits[0].W.T
    signs = ica.positive_skew_signs(sample)
    from scipy.stats import kurtosis

    source_kurt = kurtosis(sample, axis=0)
    order = np.argsort(-source_kurt)  # most heavy-tailed first
    W = (signs[:, None] * fits[0].W)[order]
    stab = stab[order]
    n_fit = len(z)
    del z, sample  # before the control, which builds its own n × k array
    control = None
    if cfg.gaussian_control:
        # the engine's control gets the symmetric iterations the real fits needed to settle: the
        # question is whether noise settles as soon as the real components did (on Gaussian rows
        # nothing settles, so it would otherwise always run to the cap); the refine that follows
        # only polishes rows that have settled, and a control has none
        budget = cfg.ica_max_iter if cfg.ica_backend == "sklearn" else min(
            cfg.ica_max_iter, max(f.n_iter_symmetric or f.n_iter for f in fits))
        print(f"Gaussian control: FastICA on {n_fit:,} × {k} whitened Gaussian rows, same seeds, "
              f"≤ {budget} iterations")
        control = {**ica.gaussian_control(n_fit, k, [f.seed for f in fits], budget, cfg.ica_tol, white,
                                          cfg.ica_resample, cfg.ica_backend, device).summary(cfg.stable_cos),
                   "max_iter": budget}

    unmixing = W @ white.whitener  # [k, d_model]
    mixing = white.dewhitener.T @ W.T  # [d_model, k]
    directions = ica.mixing_directions(W, white)

    n_above = (int(((stab >= cfg.stable_cos) & (source_kurt[order] > control["source_excess_kurtosis_max_abs"])).sum())
               if control else None)  # stable and more heavy-tailed than anything in the Gaussian control
    err = 0.0
    total = 0.0
    with store.transaction():
        _record_config(store, cfg)
        sources = store.open_npy("ica_activations.npy", (n, k), np.float32)
        for s in range(0, n, chunk):
            r = np.asarray(resid[s:s + chunk], dtype=np.float64) - white.mean
            src = r @ unmixing.T
            sources[s:s + chunk] = src
            err += float(((r - src @ mixing.T) ** 2).sum())
            total += float((r ** 2).sum())
        sources.flush()
        del sources
        explained = 1.0 - err / total
        ok = abs(explained - white.explained) < 1e-3
        if not ok:
            raise RuntimeError(f"ICA reconstruction explains {explained:.5f} of residual variance but the "
                               f"PCA subspace holds {white.explained:.5f}: the unmixing is inconsistent")
        store.save_npy("ica_directions.npy", directions.astype(np.float32))
        store.save_npy("ica_mixing.npy", mixing.astype(np.float32))
        store.save_npy("ica_unmixing.npy", unmixing.astype(np.float32))
        n_stable = int((stab >= cfg.stable_cos).sum())
        _write_stamped(store, cfg, "ica.json", {
            "k": k, "k_rule": k_rule, "n_tokens": n, "n_fit_tokens": int(len(fit_rows)),
            "algorithm": ("scikit-learn FastICA, parallel, logcosh, whiten=False on PCA-whitened data"
                          if cfg.ica_backend == "sklearn" else
                          "darkmatter.ica_engine FastICA (PyTorch, float32 products, float64 sums), parallel, "
                          "logcosh, on PCA-whitened data; stops once the identifiable components are stable, "
                          "then refines those alone to tol"),
            "backend": cfg.ica_backend,
            "seeds": seed_records,
            "restart_resample": cfg.ica_resample,
            "all_converged": all(f.converged for f in fits),
            "all_settled_converged": all(f.converged or (f.stopped_on_stability and bool(f.settled_converged))
                                         for f in fits),
            "max_iter": cfg.ica_max_iter, "tol": cfg.ica_tol,
            "stability_min_abs_cos": stab.tolist(), "stable_threshold": cfg.stable_cos,
            "n_stable": n_stable,
            "pca_variance_kept": white.explained, "reconstruction_variance_explained": explained,
            "reconstruction_matches_pca": ok,
            "component_order": "descending excess kurtosis of the source; sign: positive skew",
            "gaussian_control": control,
            **({"n_stable_above_control": n_above} if control else {}),
        })
    print(f"{n_stable}/{k} components stable across seeds (matched |cos| ≥ {cfg.stable_cos}); "
          f"k-component reconstruction explains {explained:.4f} of residual variance "
          f"(PCA kept {white.explained:.4f})")
    if control:
        print(f"Gaussian control (noise floor): {control['n_stable']}/{k} stable, max |source excess "
              f"kurtosis| {control['source_excess_kurtosis_max_abs']:.3f}; real components stable and above "
              f"that kurtosis: {n_above}")


# ---------------------------------------------------------------------------------------------
# 05 compare with the SAE
# ---------------------------------------------------------------------------------------------
def step5_compare(cfg: Config, store: OutputStore) -> None:
    """Max |cos| of ICA, random and top-PCA directions to the SAE decoder rows."""
    setup, _ = _read_inputs(store, cfg, "setup.json", "ica.json")
    store.require("ica_directions.npy", "pca_components.npy")
    directions = store.load_npy("ica_directions.npy", mmap=False)
    k, d = directions.shape
    W_dec = _decoder(load_sae(cfg, cfg.resolved_device(), trained_path=store.path("sae")), d)
    sets = {
        "ICA": compare.decoder_match(directions, W_dec),
        "random": compare.decoder_match(compare.random_directions(k, d, cfg.seed), W_dec),
        "PCA": compare.decoder_match(store.load_npy("pca_components.npy", mmap=False)[:k], W_dec),
    }
    per_component = []
    for i in range(k):
        entry = {"component": i, "max_abs_cos": float(sets["ICA"].max_abs_cos[i]),
                 "best_feature": int(sets["ICA"].best_feature[i]),
                 "top_features": sets["ICA"].top_features[i].tolist(),
                 "top_cos": sets["ICA"].top_cos[i].tolist()}
        if cfg.neuronpedia_id:
            entry["neuronpedia"] = f"{cfg.neuronpedia_id}/{entry['best_feature']}"
        per_component.append(entry)
    result = {"k": k, "d_sae": int(W_dec.shape[0]), "thresholds": [compare.LOW, compare.HIGH],
              **{name: m.summary() for name, m in sets.items()}, "components": per_component}
    truth = _groundtruth(cfg, store, setup, directions, W_dec) if cfg.planted else None
    with store.transaction():
        _write_stamped(store, cfg, "similarity.json", result)
        if truth is not None:
            groundtruth, fig = truth
            _write_stamped(store, cfg, "groundtruth.json", groundtruth)
            store.save_figure("groundtruth_recovery.png", fig)
        else:
            for stale in ("groundtruth.json", "groundtruth_recovery.png"):
                if store.exists(stale):
                    store.discard(stale)
        store.save_figure("ica_sae_similarity.png", plots.similarity_histograms(
            {f"ICA ({k} components)": sets["ICA"].max_abs_cos,
             f"random ({k} unit directions)": sets["random"].max_abs_cos,
             f"PCA (top {k} residual components)": sets["PCA"].max_abs_cos},
            f"Nearest SAE feature: {setup['sae']['source']} (d_sae {W_dec.shape[0]:,})", ylabel="directions"))
    for name, m in sets.items():
        s = m.summary()
        print(f"{name:>6}: mean max|cos| {s['mean_max_abs_cos']:.3f}; >0.8: {s['above_0.8']}, "
              f"0.3–0.8: {s['between_0.3_0.8']}, <0.3: {s['below_0.3']}")


def _groundtruth(cfg: Config, store: OutputStore, setup: dict[str, Any], directions: np.ndarray,
                 W_dec: np.ndarray) -> tuple[dict[str, Any], Any]:
    """Planted runs: score ICA, PCA and random directions against the true dark features."""
    (ica_info,) = _read_inputs(store, cfg, "ica.json")
    truth = store.load_npy("planted_directions.npy", mmap=False).astype(np.float64)
    k, d = directions.shape
    if cfg.planted_mode == "withheld":
        dark = np.asarray(setup["planted"]["withheld"], dtype=np.int64)
        rule = "the features withheld from the oracle SAE"
    else:
        dark = planted.missed_by_decoder(W_dec, truth)
        rule = f"true features that no SAE decoder row matches at |cos| > {planted.FOUND_COS}"
    sets = {"ICA": directions, "PCA": store.load_npy("pca_components.npy", mmap=False)[:k],
            "random": compare.random_directions(k, d, cfg.seed)}
    scores = {name: planted.score(dirs, truth, dark) for name, dirs in sets.items()}
    stable = np.asarray(ica_info["stability_min_abs_cos"]) >= cfg.stable_cos
    ica = scores["ICA"]
    decoder = planted.score(W_dec, truth, np.arange(len(truth)))
    result = {
        "n_true_features": len(truth), "dark_features": dark.tolist(), "dark_rule": rule,
        "found_cos": planted.FOUND_COS, "false_discovery_cos": planted.FALSE_COS, "k": k,
        **{name: sc.summary() for name, sc in scores.items()},
        "ICA_stable_only": {"n_stable": int(stable.sum()),
                            "n_false_discoveries": int((ica.nearest_true_cos[stable] < planted.FALSE_COS).sum())},
        "sae_decoder": {"n_true_features_matched": int((decoder.max_abs_cos > planted.FOUND_COS).sum()),
                        "d_sae": int(W_dec.shape[0])},
        "per_dark_feature": [
            {"feature": int(f), "ica_max_abs_cos": float(ica.max_abs_cos[j]),
             "ica_component": int(ica.best_direction[j]),
             "pca_max_abs_cos": float(scores["PCA"].max_abs_cos[j]),
             "random_max_abs_cos": float(scores["random"].max_abs_cos[j])} for j, f in enumerate(dark)],
        "per_component": [{"component": i, "nearest_true_feature": int(ica.nearest_true[i]),
                           "abs_cos": float(ica.nearest_true_cos[i]),
                           "is_dark": bool(ica.nearest_true[i] in set(dark.tolist()))} for i in range(k)],
    }
    s = result["ICA"]
    print(f"ground truth ({len(dark)} dark features: {rule}): found at |cos| > {planted.FOUND_COS}: "
          + ", ".join(f"{name} {result[name]['n_found']}" for name in sets)
          + f"; ICA mean max|cos| {s['mean_max_abs_cos']:.3f}, false discoveries {s['n_false_discoveries']}/{k}")
    fig = plots.similarity_histograms(
        {f"{name} ({k} directions)": sc.max_abs_cos for name, sc in scores.items()},
        f"Recovery of {len(dark)} planted dark features (best |cos| of each to any direction)",
        xlabel="best |cos| of each dark feature to the direction set", marks=(planted.FALSE_COS, planted.FOUND_COS),
        ylabel="dark features")
    return result, fig


# ---------------------------------------------------------------------------------------------
# 06 interpret
# ---------------------------------------------------------------------------------------------
def step6_interpret(cfg: Config, store: OutputStore) -> None:
    """Top/bottom contexts, quantile samples, frequent tokens, logit lens, nearest SAE features.

    Planted runs have no text: each row's "context" lists its ground-truth active features
    (``f17*:1.52`` = feature 17 at magnitude 1.52, ``*`` = a dark feature), and each component
    names its nearest true feature."""
    setup, _, _, similarity = _read_inputs(store, cfg, "setup.json", "sae_stats.json", "ica.json",
                                           "similarity.json")
    sources = store.load_npy("ica_activations.npy")
    directions = store.load_npy("ica_directions.npy", mmap=False)
    index = store.load_npy("token_index.npy", mmap=False)
    top, bottom = interpret.extreme_rows(sources, cfg.n_top_contexts)
    qrows = stats.random_rows(len(sources), QUANTILE_SAMPLE, cfg.seed)
    qvalues = np.asarray(sources[qrows], dtype=np.float64)
    W_U = None
    truth: dict[str, Any] | None = None
    if cfg.planted:
        (truth,) = _read_inputs(store, cfg, "groundtruth.json")
        dark = set(truth["dark_features"])
        shown = np.unique(np.concatenate([top.ravel(), bottom.ravel(), qrows]))
        active = dict(zip(shown.tolist(), planted.features_at(cfg.planted_spec(), "analysis", index[shown, 0])))

        def ctx(row: int) -> dict[str, Any]:
            f = active[int(row)]
            on = np.flatnonzero(f)[np.argsort(-f[np.flatnonzero(f)])]
            label = " ".join(f"f{j}{'*' if j in dark else ''}:{f[j]:.2f}" for j in on) or "(no feature fired)"
            return {"token": f"f{on[0]}{'*' if on[0] in dark else ''}" if len(on) else "none",
                    "row": int(index[row, 0]), "context": label}

        def decode(t: str) -> str:
            return t
    else:
        tokens = store.load_npy("tokens.npy", mmap=False)
        model = load_model(cfg, cfg.resolved_device())
        W_U = model.unembed()
        bos = setup["bos_id"]
        decode_cache: dict[int, str] = {}

        def decode(t: int) -> str:
            if t not in decode_cache:
                decode_cache[t] = model.decode(t)
            return decode_cache[t]

        def ctx(row: int) -> dict[str, Any]:
            w, p = index[row]
            return {"token": decode(int(tokens[w, p])), "window": int(w), "position": int(p),
                    "context": interpret.context(tokens, int(w), int(p), cfg.context_window, decode, bos)}

    components = []
    for i in range(directions.shape[0]):
        entry: dict[str, Any] = {"component": i}
        entry["top"] = [{**ctx(r), "activation": float(sources[r, i])} for r in top[i]]
        entry["bottom"] = [{**ctx(r), "activation": float(sources[r, i])} for r in bottom[i]]
        entry["quantiles"] = [{"quantile": q, **ctx(r), "activation": v}
                              for q, r, v in interpret.quantile_rows(qvalues[:, i], qrows)]
        if truth is not None:
            entry["frequent_top_tokens"] = interpret.frequent_tokens(
                np.array([e["token"] for e in entry["top"]]), decode)
            entry["nearest_true_feature"] = truth["per_component"][i]
        else:
            entry["frequent_top_tokens"] = interpret.frequent_tokens(
                np.array([tokens[index[r][0], index[r][1]] for r in top[i]]), decode)
        if W_U is not None:
            up, down = interpret.logit_lens(directions[i], W_U, decode)
            entry["logit_lens"] = {"top": up, "bottom": down}
        sim = similarity["components"][i]
        entry["nearest_sae_features"] = [
            {"feature": f, "cos": c, **({"neuronpedia": f"{cfg.neuronpedia_id}/{f}"} if cfg.neuronpedia_id else {})}
            for f, c in zip(sim["top_features"], sim["top_cos"])]
        components.append(entry)
    with store.transaction():
        _record_config(store, cfg)
        _write_stamped(store, cfg, "interpretations.json", {"k": len(components), "components": components})
        store.write_text("components.md", report.components_markdown(components, cfg, setup))
    print(f"interpreted {len(components)} components → {store.path('components.md')}")


# ---------------------------------------------------------------------------------------------
# 07 statistics
# ---------------------------------------------------------------------------------------------
def step7_statistics(cfg: Config, store: OutputStore) -> None:
    """Excess kurtosis and sparsity of ICA sources against SAE feature activations."""
    sae_stats, ica_info = _read_inputs(store, cfg, "sae_stats.json", "ica.json")
    control = ica_info.get("gaussian_control")
    sources = store.load_npy("ica_activations.npy")
    n, k = sources.shape
    chunk = max(cfg.sae_chunk_size, 65536)
    m_ica = _moments(sources, "ica_activations.npy", chunk)
    sd = np.sqrt(m_ica.var)
    tail = np.zeros(k)
    for s in range(0, n, chunk):
        tail += (np.abs(np.asarray(sources[s:s + chunk], dtype=np.float64) - m_ica.mean) > 3 * sd).sum(0)
    tail /= n
    corr = m_ica.cov / np.outer(sd, sd)
    fm = store.load_npy("sae_feature_moments.npy", mmap=False)
    if sae_stats["n_tokens"] != n or fm.shape != (5, sae_stats["d_sae"]):
        raise DarkMatterError("ica_activations.npy / sae_feature_moments.npy do not match sae_stats.json: "
                              "rerun scripts/02_collect_activations.py, then 03-04")
    freq = fm[0] / n
    alive = freq >= ALIVE_FREQUENCY
    _, _, _, sae_kurt = stats.central_from_raw(n, fm[1], fm[2], fm[3], fm[4])
    se = stats.kurtosis_standard_error(n)
    ica_k = m_ica.excess_kurtosis
    result = {
        "n_tokens": n, "k": k, "kurtosis_standard_error": se,
        "ica_excess_kurtosis": {**_summary(ica_k), "per_component": ica_k.tolist(),
                                "n_above_5_se": int((ica_k > 5 * se).sum())},
        "sae_excess_kurtosis": {**(_summary(sae_kurt[alive]) if alive.any() else {}),
                                "n_features_counted": int(alive.sum()),
                                "min_firing_frequency": ALIVE_FREQUENCY},
        "ica_tail_fraction_3sd": {**_summary(tail), "gaussian": GAUSS_TAIL_3SD},
        "sae_firing_frequency": {**(_summary(freq[alive]) if alive.any() else {}),
                                 "mean_l0": float(fm[0].sum() / n)},
        "ica_max_abs_offdiag_correlation": float(np.abs(corr - np.diag(np.diag(corr))).max()),
    }
    if control:
        floor = control["source_excess_kurtosis_max_abs"]
        result["gaussian_control"] = {
            "source_excess_kurtosis_max_abs": floor, "n_stable": control["n_stable"],
            "n_ica_components_above_floor": int((ica_k > floor).sum()),
            "n_ica_stable": ica_info["n_stable"],
            "what": "FastICA with the same tokens, k and seeds on a whitened Gaussian surrogate"}
    with store.transaction():
        _write_stamped(store, cfg, "statistics.json", result)
        store.save_figure("ica_vs_sae_kurtosis.png", plots.kurtosis_vs_sae(
            ica_k, sae_kurt[alive], tail, freq[alive], GAUSS_TAIL_3SD, se,
            f"ICA sources of the residual vs SAE features ({n:,} tokens)",
            control["source_excess_kurtosis_max_abs"] if control else None))
    print(f"excess kurtosis: ICA median {np.median(ica_k):.2f} (max {ica_k.max():.1f}); SAE features "
          f"(firing ≥ {ALIVE_FREQUENCY:.1%}, n={alive.sum()}) median "
          f"{np.median(sae_kurt[alive]) if alive.any() else float('nan'):.1f}")
    if control:
        gc = result["gaussian_control"]
        print(f"noise floor (ICA on a Gaussian surrogate): max |excess kurtosis| "
              f"{gc['source_excess_kurtosis_max_abs']:.3f}, {gc['n_stable']} stable; "
              f"real: {gc['n_ica_components_above_floor']}/{k} components above it, "
              f"{gc['n_ica_stable']} stable")


# ---------------------------------------------------------------------------------------------
# 08 report
# ---------------------------------------------------------------------------------------------
def step8_report(cfg: Config, store: OutputStore) -> None:
    """Aggregate every JSON into ica_dark_matter_results.json and write report.md."""
    names = tuple(n for n in STAMPED if n != "groundtruth.json" or cfg.planted)
    parts = {name.removesuffix(".json"): data for name, data in zip(names, _read_inputs(store, cfg, *names))}
    if store.exists("sae_training.json"):
        parts["sae_training"] = store.read_json("sae_training.json")
    if store.exists("timings.json"):
        parts["timings"] = store.read_json("timings.json")
    arrays = {}
    for name in (n for n in PRODUCER if n.endswith(".npy") and store.exists(n)):
        arr = store.load_npy(name)
        arrays[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    results = report.aggregate(cfg, parts, arrays)
    with store.transaction():
        store.write_json("ica_dark_matter_results.json", results)
        store.write_text("report.md", report.report_markdown(results))
    print(f"wrote {store.path('report.md')}")
    for line in results["headline"]:
        print("  " + line)
