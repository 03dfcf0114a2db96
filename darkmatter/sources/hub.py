"""The Hugging Face hub: fail fast, with one line, when it cannot be reached.

Loading code keeps the real calls (``HookedTransformer.from_pretrained``,
``SAE.from_pretrained``, ``datasets.load_dataset``) inside :func:`hub_guard`: with no hub,
huggingface_hub is switched to its local cache at once (no retries), a cached object still
loads, and anything else becomes one :class:`~darkmatter.errors.DarkMatterError` line.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from darkmatter.errors import DarkMatterError

OFFLINE_HINT = "run offline with --preset smollm2-135m-local"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True if a TCP connection to the Hugging Face hub opens within ``timeout_s`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def go_offline() -> None:
    """Make huggingface_hub read only its local cache, so failures are immediate, not retried."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


@contextlib.contextmanager
def hub_guard(what: str) -> Iterator[None]:
    """Turn a failure to fetch ``what`` from the hub into one DarkMatterError line.

    If the hub is unreachable, loading falls back to the local Hugging Face
    cache at once (no retries); a cached model still loads. With the hub
    reachable, a missing repository or file is reported with the library's reason.

    Raises:
        DarkMatterError: the object could not be loaded.
    """
    reachable = hub_reachable()
    if not reachable:
        go_offline()
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
