"""The package's shape, checked from its source (issue 22).

The folder tree of ``minillm/`` is the lesson map: one subpackage per stage, and layers only point
down. This test builds the import graph from the source, imports inside functions included, and
fails with the file and line of anything that breaks a rule:

- a module imports a later stage (even inside a function);
- an import of ``minillm`` inside a function (those hid the old cycles; only optional
  third-party packages are imported inside functions);
- any import cycle between modules;
- ``argparse`` outside the command layer (:mod:`minillm.cli`);
- a module longer than 600 lines;
- a subpackage without a docstring naming its lesson, or without ``__all__``;
- the architecture page (CONTRIBUTING.md) not naming every subpackage.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "minillm"
MAX_LINES = 600

# The layers, bottom to top: a module may import its own layer or a lower one. Lessons 03-04 share
# ``model``, lessons 05-07 ``train``; ``course`` assembles the shipped models from every stage;
# ``cli`` drives them all.
LAYERS: dict[str, int] = {
    "utils": 0,  # lesson 00, and the plumbing every stage shares
    "data": 1,
    "tokenizer": 2,
    "model": 3,
    "train": 5,
    "finetune": 8,
    "evaluate": 9,
    "quantize": 10,
    "serve": 11,
    "release": 12,
    "interpret": 13,
    "course": 50,
    "cli": 60,
    "__main__": 70,
    "__init__": 70,  # minillm/__init__.py: the few top-level names, resolved lazily
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. minillm.train.loop
    target: str  # imported module, e.g. minillm.model.gpt
    file: Path
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if module == "minillm":
        return LAYERS["__init__"]
    return LAYERS[parts[1]]


def _resolve(module: str, name: str | None) -> str:
    """The module that ``from module import name`` reads (a submodule when ``name`` is one)."""
    if name and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str, file: Path) -> None:
        self.source, self.file = source, file
        self.depth = 0
        self.imports: list[Import] = []
        self.third_party: list[tuple[str, int, bool]] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, target: str, line: int) -> None:
        self.imports.append(Import(self.source, target, self.file, line, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "minillm" or alias.name.startswith("minillm."):
                self._add(alias.name, node.lineno)
            else:
                self.third_party.append((alias.name, node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:  # relative imports are not used in minillm; resolve them anyway
            base = self.source.split(".")[: -node.level + (self.file.name == "__init__.py")]
            module = ".".join([*base, module] if module else base)
        if module == "minillm" or module.startswith("minillm."):
            for alias in node.names:
                self._add(_resolve(module, alias.name), node.lineno)
                # `from minillm.model import sampling` inside minillm.model reads the package's
                # __init__, which imports this module: a cycle through the package. Count it.
                if module != "minillm" and self.source.startswith(module + "."):
                    self._add(module, node.lineno)
        else:
            self.third_party.append((module, node.lineno, self.depth > 0))


def _collect() -> tuple[list[Import], dict[str, list[tuple[str, int, bool]]]]:
    imports, third = [], {}
    for name, path in MODULES.items():
        collector = _Collector(name, path)
        collector.visit(ast.parse(path.read_text(encoding="utf-8")))
        imports += collector.imports
        third[name] = collector.third_party
    return imports, third


IMPORTS, THIRD_PARTY = _collect()


def _where(imp: Import) -> str:
    return f"{imp.file.relative_to(ROOT)}:{imp.line}"


def test_every_module_belongs_to_a_layer() -> None:
    unknown = [m for m in MODULES if m != "minillm" and m.split(".")[1] not in LAYERS]
    assert not unknown, f"modules outside every layer (add them to LAYERS or move them): {unknown}"


def test_no_module_imports_a_later_stage() -> None:
    bad = [
        f"{_where(i)}: {i.source} (layer {layer_of(i.source)}) imports {i.target} "
        f"(layer {layer_of(i.target)})"
        for i in IMPORTS
        if i.target in MODULES and layer_of(i.target) > layer_of(i.source)
    ]
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_imports_resolve_to_modules_that_exist() -> None:
    missing = [f"{_where(i)}: {i.target}" for i in IMPORTS if i.target not in MODULES]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_minillm_is_never_imported_inside_a_function() -> None:
    # the lazy table of minillm/__init__.py imports by name, with importlib, and is no exception:
    # it holds no import statement inside a function
    hidden = [f"{_where(i)}: {i.target}" for i in IMPORTS if i.in_function]
    assert not hidden, (
        "imports of minillm inside functions (import at the top of the module; only optional "
        "third-party packages are imported inside functions):\n" + "\n".join(hidden)
    )


def _cycles() -> list[list[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles()
    detail = []
    for component in cycles:
        members = set(component)
        edges = [
            f"  {_where(i)}: {i.source} -> {i.target}"
            for i in IMPORTS
            if i.source in members and i.target in members and i.source != i.target
        ]
        detail.append(" / ".join(component) + "\n" + "\n".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_argparse_only_in_the_command_layer() -> None:
    bad = [
        f"{MODULES[m].relative_to(ROOT)}:{line}"
        for m, imports in THIRD_PARTY.items()
        for name, line, _ in imports
        if name.split(".")[0] == "argparse"
        and not (m == "minillm.cli" or m.startswith("minillm.cli."))
    ]
    assert not bad, "argparse outside minillm/cli/:\n" + "\n".join(bad)


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them along their seams): {long}"


SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_says_its_lesson_and_lists_its_names(name: str) -> None:
    init = PACKAGE / name / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree) or ""
    if name not in ("cli", "utils"):
        assert re.search(r"Lessons? \d\d", doc), f"{init}: its docstring names no lesson: {doc!r}"
    exported = [
        n
        for n in tree.body
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
    ]
    assert exported, f"{init} has no __all__"
    module = __import__(f"minillm.{name}", fromlist=["__all__"])
    missing = [x for x in module.__all__ if not hasattr(module, x)]
    assert not missing, f"minillm.{name}.__all__ lists names it does not have: {missing}"


def test_the_architecture_page_names_every_subpackage() -> None:
    page = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = page.split("## Architecture", 1)
    assert len(section) == 2, "CONTRIBUTING.md has no '## Architecture' section"
    unnamed = [n for n in [*SUBPACKAGES, "course"] if f"minillm/{n}" not in section[1]]
    assert not unnamed, f"the architecture page does not name: {unnamed}"


def test_the_checker_sees_a_cycle_through_the_stage_package() -> None:
    source = "from minillm.model import sampling\n"
    collector = _Collector("minillm.model.gpt", PACKAGE / "model" / "gpt.py")
    collector.visit(ast.parse(source))
    assert {i.target for i in collector.imports} == {"minillm.model.sampling", "minillm.model"}


def test_the_checker_catches_what_it_claims() -> None:
    """A later-stage import inside a function, and a cycle, are both seen on a made-up source."""
    source = "def f():\n    from minillm.serve.app import create_app\n"
    collector = _Collector("minillm.model.gpt", PACKAGE / "model" / "gpt.py")
    collector.visit(ast.parse(source))
    (imp,) = collector.imports
    assert imp.in_function and imp.target == "minillm.serve.app", imp
    assert layer_of(imp.target) > layer_of(imp.source)
