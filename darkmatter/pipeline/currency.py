"""What ``run_pipeline.py`` reruns: a run folder's recorded configuration when no flag is given,
and whether a step's outputs are current (stamps, inputs and the commit manifest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.config import Config


def recorded_unless_given(given: dict) -> dict:
    """With no flag but ``--outputs`` and an existing run folder there, that run's recorded
    configuration (said on the console); otherwise ``given`` unchanged.

    Raises:
        DarkMatterError: the folder's config.json is unreadable (names the file).
    """
    import json

    from darkmatter.pipeline.config import flat
    from darkmatter.pipeline.validate import config_from_dict

    outputs = given.get("outputs", Config().run.outputs)
    path = Path(outputs) / "config.json"
    if set(given) - {"outputs"} or not path.is_file():
        return given
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DarkMatterError(f"{path} is unreadable ({exc}): pass the run's flags, or another --outputs") from None
    cfg = config_from_dict(recorded, str(path))
    print(f"reusing the configuration recorded in {path} (preset {cfg.source.preset}; pass flags to change it)")
    return {**{k: v for k, v in flat(cfg).items() if k != "outputs"}, "outputs": outputs}


def is_current(step: table.Step, given: dict, resolve_step: Callable[[table.Step, dict], Config]) -> bool:
    """The step's result file exists, is stamped with this tool's schema and the ``run_id`` the
    flags and today's inputs give (text, model and SAE fingerprints: changed text is redone), is
    newer than every input it reads, and every file its last commit wrote is still there as it
    wrote it (the manifest, :func:`darkmatter.pipeline.storage.journal.changed`): rerunning it would
    rewrite the same files."""
    from darkmatter.pipeline.inputs import current_inputs
    from darkmatter.pipeline.resolve import run_id
    from darkmatter.pipeline.results import SCHEMA_VERSION
    from darkmatter.pipeline.storage.store import OutputStore

    result = next((w for w in step.writes if w.endswith(".json") and w != table.CONFIG_FILE), None)
    try:
        cfg = resolve_step(step, given)
        store = OutputStore(cfg.run.outputs)
        if result is None or not store.exists(result):
            return False
        stamps = store.read_json(result)
        read = current_inputs(step, cfg, store)
        newest_input = max((store.mtime(r) for r in step.reads if store.exists(r)), default=0.0)
    except (DarkMatterError, OSError, AttributeError):
        return False
    from darkmatter.pipeline.storage.journal import changed

    return (isinstance(stamps, dict) and stamps.get("schema_version") == SCHEMA_VERSION
            and stamps.get("run_id") == run_id(cfg, step.number, read)
            and store.path(result).stat().st_mtime >= newest_input
            and not changed(store.root, step.script))
