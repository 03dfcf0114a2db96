"""The layout is the architecture: each layer imports only the layers beneath it, the analysis
layer does no I/O and never sees the run config, and pipeline/'s rooms keep their import rules."""

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
    for path in (PACKAGE / layer).rglob("*.py"):
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


#: pipeline/'s rooms and what each may import from pipeline/ besides itself. The hall is the
#: top-level modules (cli, flags, config, presets, resolve, validate, table, context, inputs,
#: currency, synthetic): everything may import the step table and the config; the hall reaches the
#: steps only through the step table's module names, at run time.
ROOMS = {
    "results": set(),
    "storage": {"table"},
    "report": {"results", "table"},
    "steps": {"results", "storage", "report", "table", "config", "context", "resolve", "source_kinds"},
}
HALL_MAY_NOT_IMPORT = {"steps"}


def pipeline_imports(path: Path) -> set[str]:
    """The pipeline modules (or rooms) a file imports: ``results``, ``storage``, ``table``, …"""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("darkmatter.pipeline"):
            parts = node.module.split(".")
            found |= {a.name for a in node.names} if len(parts) == 2 else {parts[2]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("darkmatter.pipeline.")}
    return found


def test_pipeline_is_a_handful_of_rooms():
    pipeline = PACKAGE / "pipeline"
    folders = {p.name for p in pipeline.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(ROOMS)
    assert len(list(pipeline.glob("*.py"))) <= 13, "the hall is for what runs the steps; put the rest in a room"


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_rooms_import_only_what_their_rule_allows(room):
    for path in (PACKAGE / "pipeline" / room).rglob("*.py"):
        for name in pipeline_imports(path) - {room}:
            assert name in ROOMS[room], f"{path.relative_to(PACKAGE)} imports pipeline.{name}"


def test_the_hall_reaches_the_steps_only_through_the_step_table():
    for path in (PACKAGE / "pipeline").glob("*.py"):
        assert not pipeline_imports(path) & HALL_MAY_NOT_IMPORT, path.name


def test_direction_set_names_are_defined_once():
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if '"random"' in line]
    assert len(hits) == 1 and hits[0].startswith("analysis/directions.py"), hits


def test_step_numbers_and_script_names_live_in_the_step_table():
    """Everything else asks the table (first(), sharded, resumable, producer(file)); an error that
    names a script gets it from table.producer."""
    pattern = re.compile(r"\b0[1-9]_[a-z_]+\.py|step(_number|\.number)\s*(==|!=|in)\s*[(\d]|SHARDED_STEPS")
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in (PACKAGE / "pipeline").rglob("*.py") if p.name != "table.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_libraries_name_parameters_not_flags():
    """sources/, analysis/ and experiments/ say what is wrong with a backquoted parameter
    (`text_files`); the command line turns it into the flag (config.as_flags). Their own
    __main__ parsers (the corpus fetcher) keep theirs."""
    own = {"--root", "--mirror", "--no-deps"}
    hits = []
    for layer in ("sources", "analysis", "experiments"):
        for path in (PACKAGE / layer).rglob("*.py"):
            tree = ast.parse(path.read_text())
            docs = {id(n.body[0].value) for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                    and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                    hits += [f"{path.relative_to(PACKAGE)}:{node.lineno} {f}"
                             for f in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", node.value) if f not in own]
    assert hits == []


def test_as_flags_turns_backquoted_fields_into_flags():
    from darkmatter.pipeline.config import as_flags

    assert as_flags("`text_files` x: pass `context_size` 64 or `hook_name`") == \
        "--text-files x: pass --context-size 64 or --hook-name"
    assert as_flags("`not_a_field` and `W_dec`") == "`not_a_field` and `W_dec`"
