"""The shared ``main`` of the numbered scripts: parse flags, resolve the config, time the step.

A DarkMatterError becomes one line on stderr and exit code 2; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable, Sequence

from darkmatter.config import Config, build_parser, resolve_new, resolve_recorded
from darkmatter.errors import DarkMatterError
from darkmatter.store import OutputStore

SCRIPTS = {
    1: "01_setup_and_load.py", 2: "02_collect_activations.py", 3: "03_diagnostics.py",
    4: "04_run_ica.py", 5: "05_compare_sae.py", 6: "06_interpret.py", 7: "07_statistics.py",
    8: "08_save_report.py",
}


def load_config(argv: Sequence[str] | None, step: int, description: str) -> Config:
    """Parse ``argv`` and resolve it: from the preset at step 1, else from config.json."""
    args = build_parser(description).parse_args(argv)
    if step == 1:
        return resolve_new(args)
    store = OutputStore(getattr(args, "outputs", Config.outputs))
    recorded = store.read_json("config.json")
    return resolve_recorded(args, recorded, step,
                            fix=f"rerun scripts/{SCRIPTS[1]} with the new flags (then 02 onward)")


def reset_peak_rss() -> None:
    """Start a new peak-memory window (Linux: ``clear_refs`` 5 resets VmHWM); no-op elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory, MiB, since the last :func:`reset_peak_rss` (Linux VmHWM); else the
    process's lifetime peak (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(step: int, description: str, run: Callable[[Config, OutputStore], None],
         argv: Sequence[str] | None = None) -> int:
    """Run one pipeline step; return the process exit code (0 ok, 2 user error)."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    reset_peak_rss()
    try:
        cfg = load_config(argv, step, description)
        store = OutputStore(cfg.outputs)
        run(cfg, store)
    except DarkMatterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    store.record_timing(SCRIPTS[step], {"seconds": round(elapsed, 2),
                                        "peak_rss_mb": round(peak_rss_mb(), 1)})
    print(f"[{SCRIPTS[step]}] done in {elapsed:.1f} s (peak RAM {peak_rss_mb():.0f} MiB)")
    return 0


def run_all(argv: Sequence[str]) -> int:
    """Run steps 1-8 in this process with the same ``argv``; return the first non-zero code.

    ``--layers 0,6,11`` repeats the run for each layer (see :func:`run_layers`)."""
    argv = list(argv)
    if "--layers" in argv or any(a.startswith("--layers=") for a in argv):
        return run_layers(argv)
    return _run_steps(argv)


def _layer_argv(argv: list[str]) -> tuple[list[int], list[str]]:
    """Split ``--layers 0,6,11`` (or ``--layers=...``) off argv. Raises DarkMatterError."""
    rest, layers_text = [], None
    it = iter(argv)
    for a in it:
        if a == "--layers":
            layers_text = next(it, "")
        elif a.startswith("--layers="):
            layers_text = a.split("=", 1)[1]
        else:
            rest.append(a)
    try:
        layers = [int(x) for x in (layers_text or "").split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
        raise DarkMatterError(f"--layers {layers_text!r}: give distinct non-negative layer numbers, e.g. 0,6,11")
    return layers, rest


def run_layers(argv: list[str]) -> int:
    """Train (or load) an SAE and analyse it for several layers in one call.

    Layer L uses the configured hook with its block index replaced (``blocks.L.hook_resid_pre``)
    and the outputs subfolder ``<outputs>/layer_LL``; a pretrained SAE's ``--sae-id`` is
    rewritten the same way. At the end, ``<outputs>/layers_summary.{json,md}`` tabulates
    every layer. Returns the first non-zero exit code.
    """
    import re

    from darkmatter import report

    try:
        layers, rest = _layer_argv(argv)
        base = resolve_new(build_parser("run_pipeline").parse_args(rest))
        if base.planted:
            raise DarkMatterError("--layers needs a model; planted data has no layers")
        if not re.match(r"blocks\.\d+\.", base.hook_name):
            raise DarkMatterError(f"--layers needs a per-block hook (blocks.L.*), not {base.hook_name!r}")
        if base.sae_path is not None:
            raise DarkMatterError("--layers cannot share one --sae-path across layers: drop it to train "
                                  "an SAE per layer, or use a release whose ids name the hook")
        if base.sae_id is not None and not re.search(r"blocks\.\d+\.", base.sae_id):
            raise DarkMatterError(f"--layers: cannot find the layer in --sae-id {base.sae_id!r}")
    except DarkMatterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folders = {}
    for layer in layers:
        hook = re.sub(r"blocks\.\d+\.", f"blocks.{layer}.", base.hook_name, count=1)
        folders[layer] = os.path.join(base.outputs, f"layer_{layer:02d}")
        extra = ["--hook-name", hook, "--outputs", folders[layer]]
        if base.sae_id is not None:
            extra += ["--sae-id", re.sub(r"blocks\.\d+\.", f"blocks.{layer}.", base.sae_id, count=1)]
        print(f"\n##### layer {layer}: {hook} → {folders[layer]}", flush=True)
        code = _run_steps(rest + extra)
        if code:
            return code
    store = OutputStore(base.outputs)
    table = report.layers_summary({layer: OutputStore(f).read_json("ica_dark_matter_results.json")
                                   for layer, f in folders.items()})
    with store.transaction():
        store.write_json("layers_summary.json", table)
        store.write_text("layers_summary.md", report.layers_markdown(table))
    print("\n" + report.layers_markdown(table))
    return 0


def _run_steps(argv: Sequence[str]) -> int:
    """Steps 1-8 in order with the same argv."""
    from darkmatter import steps
    from darkmatter.sources import model_cache

    total = time.perf_counter()
    with model_cache():  # 01, 02 and 06 share one model load
        for step, run in enumerate((steps.step1_setup, steps.step2_collect, steps.step3_diagnostics,
                                    steps.step4_ica, steps.step5_compare, steps.step6_interpret,
                                    steps.step7_statistics, steps.step8_report), start=1):
            print(f"\n=== {SCRIPTS[step]} ===", flush=True)
            code = main(step, run.__doc__ or "", run, argv)
            if code:
                return code
    print(f"\npipeline done in {time.perf_counter() - total:.1f} s")
    return 0
