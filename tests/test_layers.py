"""The layers of docs/architecture.md hold: no module imports from a layer above its own, and
no modules import each other in a circle when they are imported.

Every module under src/pairflow is read with ``ast`` (nothing is imported): its imports at
module level, in class bodies and under ``if``/``try``, and those inside functions (a lazy
import still runs up a layer when it runs). Circles are looked for among the imports that run
when a module is imported (module level, not under ``if TYPE_CHECKING``); a lazy import inside
a function is how a circle is legitimately broken, so it is exempt from that check only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "pairflow"

LAYERS: list[tuple[str, tuple[str, ...]]] = [  # top to bottom, as docs/architecture.md
    (
        "commands",
        ("pairflow", "pairflow.__main__", "pairflow.cli", "pairflow.commands", "pairflow.app"),
    ),
    ("training and evaluation", ("pairflow.training", "pairflow.evaluation", "pairflow.loading")),
    ("the contract", ("pairflow.models",)),
    (
        "models, data, metrics",
        (
            "pairflow.flows",
            "pairflow.baselines",
            "pairflow.data",
            "pairflow.metrics",
            "pairflow.classifier",
            "pairflow.dataset_presets",
        ),
    ),
    (
        "foundations",
        (
            "pairflow.options",
            "pairflow.validation",
            "pairflow.utils",
            "pairflow.precision",
            "pairflow.pretrained",
            "pairflow.progress",
            "pairflow.images",
        ),
    ),
]

UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("pairflow.models", "pairflow.loading"): (
        "pairflow.models.load and load_with_checkpoint, the loaders' former home, stay "
        "importable for code written against them: a module __getattr__ hands out "
        "pairflow.loading's functions on first use (the contract itself never loads)"
    ),
}
"""(importer, imported) -> why this import may run up a layer. Each must still be in the code."""


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    at_import: bool  # runs when the importer is imported (module level, not TYPE_CHECKING)
    in_function: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(name: str) -> str:
    """The module ``name`` refers to: itself, or the module holding it (``pkg.mod.attr``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> list[Import]:
    found: list[Import] = []

    def add(name: str, node: ast.AST, at_import: bool, in_function: bool) -> None:
        if name == "pairflow" or name.startswith("pairflow."):
            found.append(Import(module, _target(name), node.lineno, at_import, in_function))

    def visit(node: ast.AST, at_import: bool, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, at_import, in_function)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the importer's package
                    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
                    for _ in range(child.level - 1):
                        package = package.rsplit(".", 1)[0]
                    base = f"{package}.{base}" if base else package
                for alias in child.names:  # `from pkg import submodule` imports the submodule
                    submodule = f"{base}.{alias.name}"
                    add(submodule if submodule in MODULES else base, child, at_import, in_function)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False, True)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False, in_function)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), at_import, in_function)
            else:
                visit(child, at_import, in_function)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True, False)
    return found


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def layer_of(module: str) -> int:
    """The index of ``module``'s layer in :data:`LAYERS` (0 is the top)."""
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "pairflow" and module.startswith(prefix + "."))
            if matches and len(prefix) > depth:
                best, depth = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return best


def test_the_modules_and_their_imports_are_read():
    assert len(MODULES) > 80 and "pairflow.loading" in MODULES
    assert any(i.importer == "pairflow.training.setup" and i.at_import for i in IMPORTS)
    # a lazy import inside a function is seen too
    assert any(i.importer == "pairflow.loading" and i.in_function for i in IMPORTS)


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_runs_up_a_layer():
    upward = []
    for imp in IMPORTS:
        if layer_of(imp.imported) < layer_of(imp.importer):
            if (imp.importer, imp.imported) in UPWARD_EXCEPTIONS:
                continue
            where = "in a function" if imp.in_function else "at module level"
            upward.append(
                f"{MODULES[imp.importer].relative_to(SRC)}:{imp.line} ({where}): "
                f"{imp.importer} ({LAYERS[layer_of(imp.importer)][0]}) imports "
                f"{imp.imported} ({LAYERS[layer_of(imp.imported)][0]})"
            )
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


def test_the_exceptions_are_still_needed():
    seen = {(i.importer, i.imported) for i in IMPORTS}
    for pair, why in UPWARD_EXCEPTIONS.items():
        assert pair in seen, f"{pair} no longer imported: drop its exception ({why})"
        assert layer_of(pair[1]) < layer_of(pair[0]), f"{pair} does not run up a layer"


def test_no_command_imports_another_command():
    crossing = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if i.importer.startswith("pairflow.commands.")
        and i.imported.startswith("pairflow.commands.")
        and i.imported not in (i.importer, "pairflow.commands._common")
    ]
    assert not crossing, "\n".join(crossing)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or with a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_cycle_finder_finds_a_circle_and_passes_a_tree():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}}) == []


def test_no_circle_of_imports_at_module_level():
    edges: dict[str, set[str]] = {}
    for imp in IMPORTS:
        if imp.at_import and imp.imported != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    assert _cycles(edges) == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("pairflow.loading", "training and evaluation"),
        ("pairflow.training.speed", "training and evaluation"),
        ("pairflow.precision", "foundations"),
        ("pairflow.models", "the contract"),
        ("pairflow.flows.model", "models, data, metrics"),
        ("pairflow", "commands"),
    ],
)
def test_where_the_moved_pieces_live(module, layer):
    assert LAYERS[layer_of(module)][0] == layer
