"""The LLM behind auto-interpretation, chosen by environment variables and off by default.

``DARKMATTER_LLM``:
  - unset or empty: no client (:func:`client_from_env` returns None);
  - ``openai``: an OpenAI-compatible chat-completions endpoint over the standard library's
    ``urllib.request``: ``DARKMATTER_LLM_URL`` (default ``https://api.openai.com/v1``; any server that
    speaks ``POST {url}/chat/completions``, e.g. vLLM or Ollama), ``DARKMATTER_LLM_MODEL`` (default
    ``gpt-4o-mini``), the key from ``DARKMATTER_LLM_API_KEY`` or ``OPENAI_API_KEY`` (none is sent
    when neither is set), ``DARKMATTER_LLM_TIMEOUT`` seconds per request (default 60);
  - ``module:callable``: a Python object importable as ``module.callable``: either a function
    ``complete(prompt: str) -> str`` or an object with ``explain`` and ``judge`` methods
    (:class:`darkmatter.analysis.autointerp.Interpreter`).
"""

from __future__ import annotations

import importlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from darkmatter.analysis.autointerp import Interpreter, LLMInterpreter
from darkmatter.errors import DarkMatterError

ENV = "DARKMATTER_LLM"
DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class OpenAIChat:
    """``complete(prompt) -> reply`` over an OpenAI-compatible chat-completions endpoint.

    Attributes:
        url: the API base (``…/v1``); model: the model name; api_key: sent as a bearer token when set.
        timeout: seconds per request; retries: extra tries after HTTP 429 or 5xx (1 s, 2 s, … apart).
        max_tokens: of each reply; temperature 0.
    """

    url: str = DEFAULT_URL
    model: str = DEFAULT_MODEL
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 2
    max_tokens: int = 300

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChat(url={self.url!r}, model={self.model!r}, timeout={self.timeout})"

    def __call__(self, prompt: str) -> str:
        """The reply to one user message.

        Raises:
            DarkMatterError: unreachable, an HTTP error, or a reply that is not chat-completions JSON.
        """
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        endpoint = self.url.rstrip("/") + "/chat/completions"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as exc:
                if (exc.code == 429 or exc.code >= 500) and attempt < self.retries:
                    time.sleep(2.0 ** attempt)
                    continue
                raise DarkMatterError(f"LLM endpoint {endpoint} answered HTTP {exc.code} {_one_line(exc.reason)}: "
                                      f"check DARKMATTER_LLM_MODEL ({self.model}) and the API key") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = _one_line(getattr(exc, "reason", exc) or type(exc).__name__)
                raise DarkMatterError(f"LLM endpoint {endpoint} unreachable ({reason}): set DARKMATTER_LLM_URL, "
                                      f"or unset {ENV}") from None
            except ValueError:
                raise DarkMatterError(f"LLM endpoint {endpoint} did not answer JSON: is it an OpenAI-compatible "
                                      "chat-completions endpoint?") from None
        try:
            return str(reply["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise DarkMatterError(f"LLM endpoint {endpoint} answered without choices[0].message.content: is it an "
                                  "OpenAI-compatible chat-completions endpoint?") from None


def load_callable(spec: str) -> Interpreter:
    """The interpreter named by ``module:callable`` (a ``complete(prompt) -> str`` function is wrapped
    in :class:`LLMInterpreter`; an object with ``explain`` and ``judge`` is used as it is).

    Raises:
        DarkMatterError: it cannot be imported, or is neither.
    """
    module_name, _, attr = spec.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DarkMatterError(f"{ENV}={spec!r}: cannot load {attr!r} from module {module_name!r} "
                              f"({_one_line(exc)})") from None
    if hasattr(obj, "explain") and hasattr(obj, "judge"):
        return obj  # type: ignore[return-value]
    if not callable(obj):
        raise DarkMatterError(f"{ENV}={spec!r} is not callable: give a function complete(prompt) -> str "
                              "or an object with explain and judge methods")
    return LLMInterpreter(complete=obj, name=spec)


def client_from_env(environ: Mapping[str, str] | None = None) -> Interpreter | None:
    """The interpreter ``DARKMATTER_LLM`` chooses (see the module docstring), or None when it is unset.

    Raises:
        DarkMatterError: an unknown choice, a bad timeout, or a callable that cannot be loaded.
    """
    env = os.environ if environ is None else environ
    choice = env.get(ENV, "").strip()
    if not choice:
        return None
    if choice == "openai":
        try:
            timeout = float(env.get("DARKMATTER_LLM_TIMEOUT", "60"))
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise DarkMatterError(f"DARKMATTER_LLM_TIMEOUT={env.get('DARKMATTER_LLM_TIMEOUT')!r}: give seconds > 0")
        chat = OpenAIChat(url=env.get("DARKMATTER_LLM_URL") or DEFAULT_URL,
                          model=env.get("DARKMATTER_LLM_MODEL") or DEFAULT_MODEL,
                          api_key=env.get("DARKMATTER_LLM_API_KEY") or env.get("OPENAI_API_KEY") or None,
                          timeout=timeout)
        return LLMInterpreter(complete=chat, name=f"openai:{chat.model}")
    if ":" in choice:
        return load_callable(choice)
    raise DarkMatterError(f"{ENV}={choice!r}: use 'openai' or 'module:callable', or unset it")
