"""The layout is the architecture: each layer imports only the layers beneath it, the analysis
layer does no I/O and never sees the run config, and pipeline modules stay small."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "darkmatter"
#: Each layer and the darkmatter layers it may import (besides itself, darkmatter.errors and
#: darkmatter.distributed: the one exception type and the one all-reduce, both used everywhere).
ALLOWED = {"analysis": set(), "sources": {"analysis"}, "experiments": {"analysis", "sources"},
           "pipeline": {"analysis", "sources", "experiments"}}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("darkmatter")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_the_layers_beneath(layer):
    for path in (PACKAGE / layer).glob("*.py"):
        for name in imports(path):
            parts = name.split(".")
            if len(parts) == 1 or parts[1] in ("errors", "distributed", layer):
                continue
            assert parts[1] in ALLOWED[layer], f"{path.relative_to(PACKAGE)} imports {name}"


def test_analysis_does_no_io_and_never_sees_the_config():
    for path in (PACKAGE / "analysis").glob("*.py"):
        text = path.read_text()
        io = r"\bopen\(|np\.(save|load)\(|\.write_text\(|\.read_text\(|json\.(dumps?|loads?)\("
        assert not re.search(io, text), path.name
        names = {n.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)}
        names |= {a.arg for n in ast.walk(ast.parse(text)) if isinstance(n, ast.arguments) for a in n.args}
        assert not names & {"Config", "cfg", "config"}, path.name


def test_pipeline_modules_stay_small():
    for path in (PACKAGE / "pipeline").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, f"{path.name} has grown past ~300 lines"


def test_direction_set_names_are_defined_once():
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if '"random"' in line]
    assert len(hits) == 1 and hits[0].startswith("analysis/directions.py"), hits
