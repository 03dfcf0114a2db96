"""The Hugging Face hub: fail fast, with one line, when it cannot be reached.

Loading code keeps the real calls (``HookedTransformer.from_pretrained``,
``SAE.from_pretrained``, ``datasets.load_dataset``) inside :func:`hub_guard`, which turns a
failure into one :class:`~darkmatter.errors.DarkMatterError` line.

Offline mode is the libraries' documented switch, the environment variable ``HF_HUB_OFFLINE=1``
(with ``HF_DATASETS_OFFLINE`` and ``TRANSFORMERS_OFFLINE``): huggingface_hub reads it once, when it
is first imported, and then loads only from its local cache, at once, with no retries. So the
decision is made before any hub library is imported: the scripts call :func:`offline_unless_reachable`
before a step loads its inputs, and :func:`go_offline` says whether it came in time. Nothing here
rewrites a library's module state.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from urllib.parse import urlparse

from darkmatter.errors import DarkMatterError

OFFLINE_HINT = "run offline with `preset` smollm2-135m-local"  # the command line prints `preset` as --preset
#: the variables that switch huggingface_hub (and, through it or directly, datasets and transformers) offline
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
#: libraries that read :data:`OFFLINE_VARIABLES` when imported (directly or through huggingface_hub)
HUB_LIBRARIES = ("huggingface_hub", "transformers", "datasets", "sae_lens", "transformer_lens")


def offline_requested() -> bool:
    """True when the environment asks for offline mode (``HF_HUB_OFFLINE`` set and not 0/false)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True if a TCP connection to the Hugging Face hub opens within ``timeout_s`` seconds
    (False at once when the environment asks for offline mode)."""
    if offline_requested():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def go_offline() -> bool:
    """Set :data:`OFFLINE_VARIABLES` to 1 in ``os.environ``, so the hub libraries read only their
    local cache: a cached object loads, a missing one fails at once instead of being retried.

    huggingface_hub reads ``HF_HUB_OFFLINE`` when it is first imported, so this takes effect only
    in a process that has imported none of :data:`HUB_LIBRARIES` yet (call it before them).

    Returns:
        True when the process is offline now: nothing was imported yet, or huggingface_hub was
        imported offline already (``huggingface_hub.is_offline_mode()``). False when a hub library
        was imported online before: its mode is left as it is; a load then tries the network and,
        on a connection error, falls back to the local cache (huggingface_hub's documented
        behaviour), more slowly, and :func:`hub_guard` still turns a failure into one line.
    """
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    if not any(name in sys.modules for name in HUB_LIBRARIES):
        return True
    from huggingface_hub import is_offline_mode

    return bool(is_offline_mode())


def offline_unless_reachable() -> bool:
    """Go offline (:func:`go_offline`) unless the hub answers; returns whether it answered.

    Call once per process before any hub library is imported: the numbered scripts do before a
    step loads its inputs (``darkmatter.pipeline.cli``), and :func:`hub_guard` does again.
    """
    reachable = hub_reachable()
    if not reachable:
        go_offline()
    return reachable


@contextlib.contextmanager
def hub_guard(what: str) -> Iterator[None]:
    """Turn a failure to fetch ``what`` from the hub into one DarkMatterError line.

    If the hub is unreachable, the process goes offline (:func:`offline_unless_reachable`: in
    time when no hub library was imported yet) and a cached object still loads. With the hub
    reachable, a missing repository or file is reported with the library's reason.

    Raises:
        DarkMatterError: the object could not be loaded.
    """
    reachable = offline_unless_reachable()
    try:
        yield
    except DarkMatterError:
        raise
    except (OSError, ConnectionError, ValueError) as exc:
        # TransformerLens and SAELens raise ValueError for an unknown model name, release or id.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if isinstance(exc, ValueError) or reachable:
            raise DarkMatterError(f"cannot load {what}: {reason}; check the name") from exc
        raise DarkMatterError(
            f"cannot load {what}: the Hugging Face hub is unreachable and it is not in the local "
            f"cache ({type(exc).__name__}); {OFFLINE_HINT}") from exc
