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
    """Run steps 1-8 in this process with the same ``argv``; return the first non-zero code."""
    from darkmatter import steps

    total = time.perf_counter()
    for step, run in enumerate((steps.step1_setup, steps.step2_collect, steps.step3_diagnostics,
                                steps.step4_ica, steps.step5_compare, steps.step6_interpret,
                                steps.step7_statistics, steps.step8_report), start=1):
        print(f"\n=== {SCRIPTS[step]} ===", flush=True)
        code = main(step, run.__doc__ or "", run, argv)
        if code:
            return code
    print(f"\npipeline done in {time.perf_counter() - total:.1f} s")
    return 0
