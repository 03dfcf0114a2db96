"""The shared ``main`` of the numbered scripts and ``run_pipeline.py``.

A DarkMatterError becomes one line on stderr and exit code 2; anything else is a bug and keeps
its traceback. Heavy libraries are imported only once a step runs, so ``--help`` is fast.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import flags, resolve, source_kinds, table
from darkmatter.pipeline.config import Config, as_flags
from darkmatter.pipeline.storage.procstat import peak_rss_mb, reset_peak_rss

if TYPE_CHECKING:
    from darkmatter.distributed import Comm


def _quiet_environment() -> None:
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

def _resolve(step: table.Step, given: dict) -> Config:
    """Step 01 resolves from the preset, later steps from the recorded config.json."""
    from darkmatter.pipeline.storage.store import OutputStore

    if step is table.first():
        return resolve.resolve_new(given)
    outputs = given.get("outputs", Config().run.outputs)
    store = OutputStore(outputs)
    recorded = store.read_json("config.json")
    # the folder read is the run's folder, whatever config.json recorded when it was elsewhere
    return resolve.resolve_recorded({**given, "outputs": outputs}, recorded, step, str(store.path("config.json")))


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's or ``kill``'s stop) and SIGHUP (a closed terminal) unwind like Ctrl-C,
    so staged files are removed; once unwinding, further Ctrl-Cs are ignored (exit 130, not -2)."""
    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        raise KeyboardInterrupt

    try:
        old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


PEER_LOST = 3
"""Exit code of a rank whose peer stopped, hung or died (step 02's checkpoint is kept)."""


def run_step(step: table.Step, given: dict) -> int:
    """Run one step with typed flags ``given``; return the exit code (0 ok, 2 user error, 130
    interrupted: Ctrl-C or SIGTERM, after which the outputs are as they were before the step).

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this: steps 02-04 are sharded, the
    others run on rank 0 while the rest wait; rank 0 holds the folder's lock, and every rank
    returns the worst exit code of any rank."""
    from darkmatter.distributed import current, is_peer_failure

    code = _run_step(step, given)
    if not current().sharded or code == PEER_LOST:
        return code
    try:  # the ranks that waited for rank 0 wait without a time limit
        return int(current().gather_ints([code], watch=False).max())
    except RuntimeError as exc:
        if not is_peer_failure(exc):
            raise
        return 2


def _run_step(step: table.Step, given: dict) -> int:
    from darkmatter import threads
    from darkmatter.distributed import PeerLost, current, init_from_env, is_peer_failure
    from darkmatter.pipeline import inputs
    from darkmatter.pipeline.context import StepContext
    from darkmatter.pipeline.storage.folder_lock import claim
    from darkmatter.pipeline.storage.store import OutputStore
    from darkmatter.sources.hub import offline_unless_reachable

    _quiet_environment()
    offline_unless_reachable()  # HF_HUB_OFFLINE is read when hub libraries import: before the step loads any
    threads.configure()
    start = time.perf_counter()
    reset_peak_rss()
    outputs = given.get("outputs", Config().run.outputs)
    try:
        with _terminate_as_interrupt():
            if not str(outputs).strip():
                raise DarkMatterError("--outputs is empty: name a new, empty or run folder (e.g. --outputs outputs)")
            claim(Path(outputs))
            cfg = _resolve(step, given)
            comm = init_from_env(cfg.resolved_device())
            _same_flags_on_every_rank(cfg, comm)
            if comm.sharded and not step.sharded and not comm.is_main:
                return 0
            store = OutputStore(cfg.run.outputs)
            store.script, store.timing = step.script, (step.script, start)
            with store.lock(step.script) if comm.is_main else nullcontext():
                store.require(*step.reads)  # the table's inputs: "run X first" before any work
                read = inputs.inputs_for(step, cfg, store)  # text, model, SAE: checked, unchanged
                inputs.check_arrays(step, cfg, store)
                step.function()(StepContext(cfg=cfg, store=store, step=step, inputs=read))
    except DarkMatterError as exc:
        print(f"error: {as_flags(str(exc))}", file=sys.stderr)
        return PEER_LOST if is_peer_failure(exc) else 2
    except RuntimeError as exc:
        if not (current().sharded and is_peer_failure(exc)):
            raise
        print(f"error: {PeerLost.of(exc, current())}", file=sys.stderr)
        return PEER_LOST
    except KeyboardInterrupt:
        print(f"interrupted: {step.script} stopped; {outputs} is as it was before it (rerun it to "
              f"{'resume from its last checkpoint' if step.resumable else 'finish'})", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        print(f"error: {step.script} could not write to {outputs} ({exc.strerror}); its outputs are as they "
              "were: free space, fix the permissions, or pass another --outputs", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    if current().is_main:  # timings.json was committed with the step's outputs
        print(f"[{step.script}] done in {elapsed:.1f} s (peak RAM {peak_rss_mb():.0f} MiB)")
    return 0


def _same_flags_on_every_rank(cfg: Config, comm: Comm) -> None:
    """Ranks given different flags would compute different things and deadlock in C++: refuse.

    Raises:
        DarkMatterError: naming the ranks whose configuration differs from rank 0's.
    """
    if not comm.sharded:
        return
    ids = comm.gather_ints([int(resolve.run_id(cfg, table.last().number)[:12], 16)])[:, 0]
    other = [r for r in range(comm.world) if ids[r] != ids[0]]
    if other:
        raise DarkMatterError(f"rank(s) {', '.join(map(str, other))} were given other flags than rank 0: give every "
                              "rank the same command")


def main(step_number: int, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/0N_*.py``: parse the command line and run step ``step_number``."""
    from darkmatter.distributed import shutdown

    step = table.step(step_number)
    parsed = flags.parse(list(sys.argv[1:] if argv is None else argv), step)
    try:
        return run_step(step, parsed.given)
    finally:
        shutdown()


def run_all(argv: Sequence[str]) -> int:
    """Entry point of ``run_pipeline.py``: every step of the table in this process with the same
    flags (``--layers 0,6,11``: once per layer, see :func:`run_layers`)."""
    from darkmatter.distributed import shutdown
    from darkmatter.pipeline.currency import recorded_unless_given

    parsed = flags.parse(list(argv), None)
    try:
        try:
            given = recorded_unless_given(parsed.given)
        except DarkMatterError as exc:
            print(f"error: {as_flags(str(exc))}", file=sys.stderr)
            return 2
        until = parsed.pipeline.until
        if until is not None and until not in [s.number for s in table.steps()]:
            print(f"error: --until {until} is not a step: choose one of "
                  f"{', '.join(str(s.number) for s in table.steps())}", file=sys.stderr)
            return 2
        if parsed.pipeline.layers is not None:
            return run_layers(given, parsed.pipeline.layers, parsed.pipeline.force, until)
        return _run_steps(given, parsed.pipeline.force, until)
    finally:
        shutdown()


def _run_steps(given: dict, force: bool = False, until: int | None = None) -> int:
    from darkmatter.pipeline.currency import is_current
    from darkmatter.sources.models import model_cache

    total = time.perf_counter()
    ran = False
    with model_cache():  # 01, 02 and 06 share one model load
        for step in table.steps():
            if until is not None and step.number > until:
                break
            if not (force or ran) and is_current(step, given, _resolve):
                print(f"=== {step.script}: skipped, its outputs are current (--force reruns it) ===", flush=True)
                continue
            ran = True  # every later step reruns after one that ran
            print(f"\n=== {step.script} ===", flush=True)
            code = run_step(step, given)
            if code:
                return code
    print(f"\npipeline done in {time.perf_counter() - total:.1f} s")
    if until is None or until >= table.last().number:
        _print_results(given, headline=False, verdict=not ran)
    return 0


def _print_results(given: dict, headline: bool, verdict: bool) -> None:
    """The verdict (when asked) and the paths to open, last on screen; nothing where the run has no
    results document yet."""
    from darkmatter.pipeline.report import console
    from darkmatter.pipeline.results.document import Results
    from darkmatter.pipeline.storage.store import OutputStore

    store = OutputStore(given.get("outputs", Config().run.outputs))
    if not store.exists("ica_dark_matter_results.json"):
        return
    try:
        results, _ = store.read_result("ica_dark_matter_results.json", Results)
    except DarkMatterError:
        return  # an older document: the paths are still where they are
    lines = console.closing_lines(results, store.root, headline) if verdict else console.path_lines(results, store.root)
    print("\n" + "\n".join(lines))


def _parse_layers(text: str) -> list[int]:
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
        raise DarkMatterError(f"--layers {text!r}: give distinct non-negative layer numbers, e.g. 0,6,11")
    return layers


def layer_neuronpedia_id(release: str | None, sae_id: str | None, given_id: str | None, base_layer: int,
                         layer: int) -> tuple[str | None, str]:
    """The Neuronpedia id of ``layer``'s SAE and where it came from, in words.

    SAELens's pretrained directory for (``release``, ``sae_id``) first
    (:func:`darkmatter.sources.saes.pretrained_neuronpedia_id`, offline); else ``given_id`` (the
    one passed or the preset's, for ``base_layer``) with ``base_layer`` replaced by ``layer`` in its
    SAE part (``gpt2-small/6-res-jb`` → ``gpt2-small/11-res-jb``); else None.

    Returns:
        (id or None, e.g. ``"from SAELens's directory for gpt2-small-res-jb"``).
    """
    from darkmatter.sources.saes import pretrained_neuronpedia_id

    if release is not None and sae_id is not None:
        listed = pretrained_neuronpedia_id(release, sae_id)
        if listed is not None:
            return listed, f"from SAELens's directory for {release}/{sae_id}"
    if given_id is None:
        return None, "none: " + (f"SAELens lists none for {release}/{sae_id}" if release else "no pretrained SAE")
    model, sep, sae = given_id.rpartition("/")
    pattern = rf"(?<!\d){base_layer}(?!\d)"
    if not re.search(pattern, sae):
        return None, f"none: cannot find layer {base_layer} in --neuronpedia-id {given_id}"
    rewritten = model + sep + re.sub(pattern, str(layer), sae, count=1)
    return rewritten, f"--neuronpedia-id {given_id} with layer {base_layer} → {layer} (not in SAELens's directory)"


def run_layers(given: dict, layers_text: str, force: bool = False, until: int | None = None) -> int:
    """Train (or load) an SAE and analyse it for several layers in one call.

    Layer L uses the configured hook with its block index replaced (``blocks.L.hook_resid_pre``)
    and the outputs subfolder ``<outputs>/layer_LL``; a pretrained SAE's ``--sae-id`` is
    rewritten the same way. At the end, ``<outputs>/layers_summary.{json,md}`` tabulates
    every layer and ``layers_summary.png`` plots it (layer on the x axis). Returns the first non-zero exit code.
    """
    from darkmatter.pipeline.report import aggregate as report
    from darkmatter.pipeline.report import plots
    from darkmatter.pipeline.report.markdown import layers_markdown
    from darkmatter.pipeline.results.document import Results
    from darkmatter.pipeline.storage.folder_lock import claim
    from darkmatter.pipeline.storage.store import OutputStore

    try:
        layers = _parse_layers(layers_text)
        base = resolve.resolve_new(given)
        s = base.source
        if not source_kinds.of(base).has_model:
            raise DarkMatterError(f"--layers needs a model; {s.model_source} activations have no layers")
        if not re.match(r"blocks\.\d+\.", s.hook_name):
            raise DarkMatterError(f"--layers needs a per-block hook (blocks.L.*), not {s.hook_name!r}")
        if s.sae_path is not None:
            raise DarkMatterError("--layers cannot share one --sae-path across layers: drop it to train "
                                  "an SAE per layer, or use a release whose ids name the hook")
        if s.sae_id is not None and not re.search(r"blocks\.\d+\.", s.sae_id):
            raise DarkMatterError(f"--layers: cannot find the layer in --sae-id {s.sae_id!r}")
        claim(Path(base.run.outputs))  # the parent of the layer folders is a run folder from now on
        (Path(base.run.outputs) / ".darkmatter").mkdir(parents=True, exist_ok=True)
    except DarkMatterError as exc:
        print(f"error: {as_flags(str(exc))}", file=sys.stderr)
        return 2
    folders = {}
    for layer in layers:
        hook = re.sub(r"blocks\.\d+\.", f"blocks.{layer}.", s.hook_name, count=1)
        folders[layer] = os.path.join(base.run.outputs, f"layer_{layer:02d}")
        extra: dict[str, str | None] = {"hook_name": hook, "outputs": folders[layer]}
        if s.sae_id is not None:
            extra["sae_id"] = re.sub(r"blocks\.\d+\.", f"blocks.{layer}.", s.sae_id, count=1)
        extra["neuronpedia_id"], how = layer_neuronpedia_id(
            s.sae_release, extra.get("sae_id"), s.neuronpedia_id,
            int(re.findall(r"blocks\.(\d+)\.", s.hook_name)[0]), layer)
        print(f"\n##### layer {layer}: {hook} → {folders[layer]}; Neuronpedia id {extra['neuronpedia_id']} ({how})",
              flush=True)
        code = _run_steps({**given, **extra}, force, until)
        if code:
            return code
    if until is not None and until < table.last().number:
        print(f"\nstopped after step {until}: no layers summary (it reads each layer's results document)")
        return 0
    store = OutputStore(base.run.outputs)
    summary = report.layers_summary({layer: OutputStore(f).read_result("ica_dark_matter_results.json", Results,
                                                                       ("schema_version", "run_id"))[0]
                                     for layer, f in folders.items()})
    with store.transaction():
        store.write_result("layers_summary.json", summary)
        store.write_text("layers_summary.md", layers_markdown(summary))
        store.save_figure("layers_summary.png", plots.layers_summary(summary))
    print("\n" + layers_markdown(summary))
    return 0


CONSOLE_USAGE = """usage: darkmatter COMMAND [flags]

  darkmatter run [flags]        every step in order, skipping current ones (scripts/run_pipeline.py)
  darkmatter step N [flags]     step N alone (scripts/0N_*.py); darkmatter step N --help lists its flags
  darkmatter report [flags]     rebuild the report, dashboard and export from a run's outputs (the last step)
  darkmatter steps              the step table: number, script, what each step does
"""


def console(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``darkmatter`` command (``pyproject.toml``'s console script): the same
    runs as the numbered scripts and ``run_pipeline.py``, which stay.

    Returns the exit code: 0, 2 for a usage error (one ``error:`` line), or the step's own.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command in ("-h", "--help"):
        print(CONSOLE_USAGE, end="")
        return 0
    if command == "run":
        return run_all(rest)
    if command == "report":
        return main(table.last().number, rest)
    if command == "steps":
        for s in table.steps():
            print(f"{s.number:>2}  {s.script:<28} {s.summary}")
        return 0
    if command == "step":
        numbers = [s.number for s in table.steps()]
        if not rest or not rest[0].isdigit() or int(rest[0]) not in numbers:
            given = repr(rest[0]) if rest else "nothing"
            print(f"error: darkmatter step needs a step number ({', '.join(map(str, numbers))}), got {given} "
                  "(see darkmatter steps)", file=sys.stderr)
            return 2
        return main(int(rest[0]), rest[1:])
    print(f"error: {'no command' if not command else f'unknown command {command!r}'}: choose run, step N, report "
          "or steps (see darkmatter --help)", file=sys.stderr)
    return 2
