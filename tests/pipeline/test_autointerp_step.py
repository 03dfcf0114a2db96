"""The optional auto-interpretation step: reads a hand-written feature_bank.json, writes autointerp.json
atomically, refuses a missing bank, and picks its LLM client from environment variables (off by default).
Nothing here reaches the network: the HTTP tests use a closed local port and a local server."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from darkmatter.analysis.autointerp import LLMInterpreter, TokenBaseline
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.steps import autointerp_step
from darkmatter.sources import llm

QS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def example(token: str, activation: float, unit: int, rng: random.Random, quantile: float | None = None,
            planted: bool = False) -> dict:
    """One example as step 06 writes it (text, or a planted label list with tokens and values null)."""
    if planted:
        return {"token": token, "context": f"{token}:{activation / 5:.2f} f{rng.randrange(90, 99)}:0.70",
                "activation": activation, "window": None, "position": None, "row": unit, "quantile": quantile,
                "unit": unit, "tokens": None, "values": None, "at": None}
    left = [f" w{rng.randrange(500)}" for _ in range(4)]
    right = [f" w{rng.randrange(500)}" for _ in range(4)]
    values = [round(rng.uniform(-0.5, 0.5), 3) for _ in range(9)]
    values[4] = activation
    return {"token": token, "context": "".join(left) + f"[[{token}]]" + "".join(right), "activation": activation,
            "window": unit, "position": 12, "row": None, "quantile": quantile, "unit": unit,
            "tokens": left + [token] + right, "values": values, "at": 4}


def entry(c: int, tokens: list[str], candidate: bool, planted: bool = False) -> dict:
    rng = random.Random(c)
    prefix = "f" if planted else " q"
    return {"component": c, "candidate": candidate, "source_excess_kurtosis": 12.0, "stability": 0.9,
            "top": [example(t, 9.0 - 0.3 * r, 100 * c + r, rng, planted=planted) for r, t in enumerate(tokens)],
            "bottom": [example(f" b{c}_{r}", -3.0 + 0.1 * r, 500 + r, rng, planted=planted) for r in range(4)],
            "quantiles": [example(f"{prefix}{c}{i}", -1.0 + 0.4 * i, 900 + i, rng, q, planted=planted)
                          for i, q in enumerate(QS)],
            "token_histogram": [], "logit_lens": None, "nearest_sae_features": [], "causal": None}


def write_bank(folder: Path, planted: bool = False) -> Path:
    """Three components: 0 fires on ' server' (candidate), 1 on random tokens, 2 on '(' (candidate);
    planted: the same pattern as labels ('f3*' …)."""
    if planted:
        comps = [entry(0, ["f3*"] * 16, True, True), entry(1, [f"f{40 + r}" for r in range(16)], False, True),
                 entry(2, ["f7*"] * 16, True, True)]
    else:
        comps = [entry(0, [" server"] * 16, True), entry(1, [f" r{r}" for r in range(16)], False),
                 entry(2, ["("] * 16, True)]
    bank = {"schema_version": 5, "run_id": "abc123", "k": 3, "n_tokens": 5000, "description": "test",
            "hook_name": "planted" if planted else "blocks.6.hook_resid_pre", "note": None, "neuronpedia": None,
            "loss_name": None, "divergence_name": None, "components": comps}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feature_bank.json").write_text(json.dumps(bank))
    return folder


@pytest.mark.parametrize("planted", [False, True])
def test_run_writes_autointerp_json(tmp_path, planted):
    out = write_bank(tmp_path / "run", planted)
    result = autointerp_step.run(out, TokenBaseline(), None)
    data = json.loads((out / "autointerp.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["autointerp.json", "feature_bank.json"]  # no temp file left
    assert data["schema_version"] == 1 and data["run_id"] == "abc123"
    assert data["interpreter"] == "token_baseline" and data["is_llm"] is False
    assert "another component's explanation" in data["null"] and data["n_scored"] == 3
    comps = {c["component"]: c for c in data["components"]}
    assert comps[0]["detection"]["balanced_accuracy"] == 1.0 and comps[2]["detection"]["balanced_accuracy"] == 1.0
    assert comps[1]["detection"]["balanced_accuracy"] == pytest.approx(0.5, abs=0.1)
    assert comps[0]["null_kind"] == "other_explanation" and comps[0]["null_balanced_accuracy"] == pytest.approx(0.5)
    assert data["mean_balanced_accuracy"] == pytest.approx(result.mean_balanced_accuracy)
    assert data["n_above"] == 2
    line = autointerp_step.summary_line(result)
    assert "\n" not in line and line.startswith("auto-interpretation by token_baseline (not an LLM): 3 component")
    assert "mean balanced accuracy 0.83" in line and "null, other components' explanations: 0.50" in line


def test_max_components_takes_candidates_first(tmp_path):
    out = write_bank(tmp_path)
    result = autointerp_step.run(out, TokenBaseline(), 1)
    assert [c.component for c in result.components] == [0] and result.components[0].null_kind == "chance"
    assert "null, chance: 0.50" in autointerp_step.summary_line(result)
    with pytest.raises(DarkMatterError, match="at least 1"):
        autointerp_step.run(out, TokenBaseline(), 0)


def test_missing_or_broken_bank_names_step_06(tmp_path, capsys):
    with pytest.raises(DarkMatterError, match=r"run scripts/06_interpret\.py first"):
        autointerp_step.run(tmp_path, TokenBaseline(), None)
    assert autointerp_step.main(["--outputs", str(tmp_path), "--baseline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no feature_bank.json") and "06_interpret.py" in err[0]
    (tmp_path / "feature_bank.json").write_text('{"components": [{"top": []}]}')
    with pytest.raises(DarkMatterError, match="not a feature bank"):
        autointerp_step.run(tmp_path, TokenBaseline(), None)
    assert not (tmp_path / "autointerp.json").exists()


def test_main_is_off_without_a_client(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(llm.ENV, raising=False)
    out = write_bank(tmp_path)
    assert autointerp_step.main(["--outputs", str(out)]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "no LLM client" in said[0] and "--baseline" in said[0]
    assert not (out / "autointerp.json").exists()
    assert autointerp_step.main(["--outputs", str(out), "--baseline"]) == 0
    assert "token_baseline" in capsys.readouterr().out and (out / "autointerp.json").exists()


def test_env_selects_the_client(monkeypatch, tmp_path):
    assert llm.client_from_env({}) is None and llm.client_from_env({llm.ENV: " "}) is None
    client = llm.client_from_env({llm.ENV: "openai", "OPENAI_API_KEY": "sk-secret"})
    assert isinstance(client, LLMInterpreter) and client.name == "openai:gpt-4o-mini" and client.is_llm
    chat = client.complete
    assert isinstance(chat, llm.OpenAIChat) and chat.url == "https://api.openai.com/v1" and chat.api_key == "sk-secret"
    assert "sk-secret" not in repr(chat) and "sk-secret" not in repr(client)
    chat = llm.client_from_env({llm.ENV: "openai", "DARKMATTER_LLM_URL": "http://localhost:8000/v1",
                                "DARKMATTER_LLM_MODEL": "qwen", "DARKMATTER_LLM_API_KEY": "k1",
                                "OPENAI_API_KEY": "k2", "DARKMATTER_LLM_TIMEOUT": "5"}).complete
    assert (chat.url, chat.model, chat.api_key, chat.timeout) == ("http://localhost:8000/v1", "qwen", "k1", 5.0)
    with pytest.raises(DarkMatterError, match="TIMEOUT"):
        llm.client_from_env({llm.ENV: "openai", "DARKMATTER_LLM_TIMEOUT": "soon"})
    with pytest.raises(DarkMatterError, match="'openai' or 'module:callable'"):
        llm.client_from_env({llm.ENV: "claude"})
    with pytest.raises(DarkMatterError, match="cannot load"):
        llm.client_from_env({llm.ENV: "no_such_module_xyz:complete"})
    (tmp_path / "my_llm_xyz.py").write_text(
        "from darkmatter.analysis.autointerp import TokenBaseline\n"
        "def complete(prompt):\n    return 'Explanation: something'\n"
        "interpreter = TokenBaseline(name='mine')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = llm.client_from_env({llm.ENV: "my_llm_xyz:complete"})
    assert isinstance(loaded, LLMInterpreter) and loaded.name == "my_llm_xyz:complete"
    assert loaded.explain([]) == "something"
    assert llm.client_from_env({llm.ENV: "my_llm_xyz:interpreter"}) == TokenBaseline(name="mine")


def test_main_runs_a_module_callable_from_the_environment(tmp_path, monkeypatch, capsys):
    (tmp_path / "judge_all_xyz.py").write_text(
        "def complete(prompt):\n"
        "    if 'Reply with only a list' in prompt:\n"
        "        return '[' + ', '.join('1' for line in prompt.splitlines() if line.startswith('Excerpt')) + ']'\n"
        "    return 'Explanation: everything'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(llm.ENV, "judge_all_xyz:complete")
    out = write_bank(tmp_path / "run")
    assert autointerp_step.main(["--outputs", str(out), "--max-components", "2"]) == 0
    data = json.loads((out / "autointerp.json").read_text())
    assert data["interpreter"] == "judge_all_xyz:complete" and data["is_llm"] is True
    assert [c["explanation"] for c in data["components"]] == ["everything", "everything"]
    assert all(c["detection"]["balanced_accuracy"] == 0.5 and c["detection"]["recall"] == 1.0
               for c in data["components"])
    assert "component 0: everything" in capsys.readouterr().out


def test_unreachable_endpoint_is_one_quick_line():
    chat = llm.OpenAIChat(url="http://127.0.0.1:9", timeout=2.0)
    start = time.perf_counter()
    with pytest.raises(DarkMatterError, match="unreachable") as info:
        chat("hello")
    assert time.perf_counter() - start < 5
    assert "\n" not in str(info.value) and "DARKMATTER_LLM_URL" in str(info.value)


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append((self.path, self.headers.get("Authorization"), body))
        if body["model"] == "missing":
            self.send_response(404)
            self.end_headers()
            return
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Explanation: hi"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_openai_chat_speaks_chat_completions_to_a_local_server():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/"
        assert llm.OpenAIChat(url=url, model="m", api_key="key", timeout=5)("the prompt") == "Explanation: hi"
        path, auth, body = _Handler.seen[-1]
        assert path == "/v1/chat/completions" and auth == "Bearer key"
        assert body["model"] == "m" and body["messages"] == [{"role": "user", "content": "the prompt"}]
        assert llm.OpenAIChat(url=url, timeout=5)("x") and _Handler.seen[-1][1] is None  # no key, no header
        with pytest.raises(DarkMatterError, match="HTTP 404") as info:
            llm.OpenAIChat(url=url, model="missing", timeout=5)("x")
        assert "\n" not in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_read_summary_matches_the_run(tmp_path):
    out = write_bank(tmp_path)
    assert autointerp_step.read_summary(out) is None
    result = autointerp_step.run(out, TokenBaseline(), None)
    assert autointerp_step.read_summary(out) == autointerp_step.summary_line(result)
    assert autointerp_step.read_summary(out, run_id="abc123") == autointerp_step.summary_line(result)
    assert autointerp_step.read_summary(out, run_id="other") is None
    (out / "autointerp.json").write_text("{")
    assert autointerp_step.read_summary(out) is None
