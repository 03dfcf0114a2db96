"""No private reach into dependencies: ``darkmatter`` uses no ``_``-prefixed attribute or module of
another package (a private name can change in any release without notice).

The rule, over every ``darkmatter/**/*.py`` (read with :mod:`ast`, nothing imported):

* ``x._name`` (one leading underscore; ``__dunder__`` names are the language's) is allowed only
  when ``_name`` is defined somewhere in darkmatter (a function, class, assignment, attribute set
  on ``self``, parameter or import alias): our own private names. ``self`` is no exemption: a
  subclass of a library class calling its inherited ``self._helper`` reaches into the library.
* ``from X import _name``, and any import of a module path with a ``_``-prefixed part
  (``torch._C``, ``sklearn.utils._testing``), is allowed only from darkmatter itself.
* :data:`DOCUMENTED` lists the few underscore names that are documented public API.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "darkmatter"

#: Underscore names that are public, documented API of the standard library.
DOCUMENTED = {
    "_exit",      # os._exit: exit without cleanup (os docs)
    "_getframe",  # sys._getframe (sys docs)
    "_asdict", "_replace", "_fields", "_make", "_field_defaults",  # namedtuple's documented methods
}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def own_names(modules: list[ast.Module]) -> set[str]:
    """Every ``_``-prefixed name darkmatter defines: defs, classes, assignment targets (names and
    attributes), parameters, import aliases and keyword-only fields."""
    names: set[str] = set()
    for tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return {n for n in names if private(n)}


def foreign_module(module: str | None, level: int) -> bool:
    return level == 0 and module is not None and module.split(".")[0] != "darkmatter"


def reaches(path: Path, tree: ast.Module, own: set[str]) -> Iterator[str]:
    where = path.relative_to(PACKAGE.parent)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own \
                and node.attr not in DOCUMENTED:
            yield f"{where}:{node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.ImportFrom) and foreign_module(node.module, node.level):
            assert node.module is not None
            if any(private(part) for part in node.module.split(".")):
                yield f"{where}:{node.lineno}: from {node.module} import ..."
            for alias in node.names:
                if private(alias.name) and alias.name not in DOCUMENTED:
                    yield f"{where}:{node.lineno}: from {node.module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if foreign_module(alias.name, 0) and any(private(p) for p in alias.name.split(".")):
                    yield f"{where}:{node.lineno}: import {alias.name}"


def test_no_private_attribute_or_module_of_another_package():
    modules = list(trees())
    assert len(modules) > 50  # the whole package was read
    own = own_names([tree for _, tree in modules])
    found = [hit for path, tree in modules for hit in reaches(path, tree, own)]
    assert not found, ("private names of other packages used (use their public API, or isolate the reach in one "
                       "adapter with a test that fails when the library changes):\n" + "\n".join(found))


def test_the_rule_catches_what_it_should():
    code = ("import torch._C\nfrom numpy.linalg import _umath_linalg\nfrom sklearn.utils._testing import x\n"
            "class A(Lib):\n    def f(self, p):\n        self._mine = 1\n        return p._parser, self._inherited, "
            "p._mine, self._mine, os._exit, p.__class__\n")
    hits = list(reaches(PACKAGE / "example.py", ast.parse(code), own_names([ast.parse(code)])))
    assert [h.split(": ", 1)[1] for h in hits] == [
        "import torch._C", "from numpy.linalg import _umath_linalg", "from sklearn.utils._testing import ...",
        "p._parser", "self._inherited"]
