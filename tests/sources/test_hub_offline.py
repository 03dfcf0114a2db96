"""Offline mode through the environment, set before the hub libraries import (they read
``HF_HUB_OFFLINE`` then): ``go_offline`` says whether it came in time and never rewrites a
library's module state, and a step decides before it loads anything. Each case runs in a fresh
interpreter, since this one imported the libraries long ago."""

from __future__ import annotations

import os
import subprocess
import sys

from darkmatter.sources.hub import OFFLINE_VARIABLES

from helpers import REPO


def python(code: str, **env: str) -> str:
    """stdout of ``code`` in a fresh interpreter whose environment asks for no offline mode."""
    clean = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**clean, **env}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_before_the_import_the_hub_libraries_start_offline():
    out = python("from darkmatter.sources.hub import go_offline\n"
                 "came_in_time = go_offline()\n"
                 "import huggingface_hub, os\n"
                 "print(came_in_time, huggingface_hub.is_offline_mode(), os.environ['HF_DATASETS_OFFLINE'])")
    assert out == "True True 1"


def test_after_the_import_it_says_so_and_leaves_the_library_alone():
    out = python("import huggingface_hub, huggingface_hub.constants as c\n"
                 "from darkmatter.sources.hub import go_offline\n"
                 "print(go_offline(), huggingface_hub.is_offline_mode(), c.HF_HUB_OFFLINE)")
    assert out == "False False False"


def test_a_step_decides_before_it_imports_any_hub_library(tmp_path):
    """Step 01 of a small planted run with the hub unreachable (HF_ENDPOINT on a closed local port):
    the offline variables are set before any hub library is imported, and whatever the step then
    imports starts offline."""
    code = (
        "import sys\n"
        "from darkmatter.sources import hub\n"
        "calls = []\n"
        "real = hub.go_offline\n"
        "def spy():\n"
        "    calls.append([m for m in hub.HUB_LIBRARIES if m in sys.modules])\n"
        "    return real()\n"
        "hub.go_offline = spy\n"
        "from darkmatter.pipeline import cli\n"
        f"code = cli.main(1, ['--preset', 'planted', '--planted-d-model', '16', '--planted-features', '24',"
        f" '--planted-withheld', '4', '--n-tokens', '2000', '--outputs', {str(tmp_path / 'out')!r}])\n"
        "imported = [m for m in hub.HUB_LIBRARIES if m in sys.modules]\n"
        "offline = sys.modules['huggingface_hub'].is_offline_mode() if 'huggingface_hub' in imported else None\n"
        "print(code, calls[0], bool(imported), offline)\n")
    out = python(code, HF_ENDPOINT="https://127.0.0.1:9").splitlines()[-1]
    assert out == "0 [] True True", out  # exit 0; no hub library at the first call; imported later, offline
