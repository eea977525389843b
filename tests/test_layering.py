"""The package's import graph keeps the arrows of DESIGN.md pointing down (issue 12).

Read from the source with ``ast`` (nothing is imported): every ``import`` and ``from ... import`` in
every module under ``src/ropelab``, at top level, inside functions and under ``TYPE_CHECKING`` alike.
Three checks:

(a) no import circle between modules (a strongly connected component of more than one module);
(b) ``cli/`` uses only the public names of ``ropelab.hf`` and ``ropelab.rope`` (their ``__all__``),
    never a submodule of either, whether imported or reached as an attribute (``ropelab.hf.load.x``);
(c) package-level edges go down the layers of DESIGN.md ("Down only"), see :data:`LAYERS`.

Edges: ``from ropelab.rope import Rope`` is an edge to the package module ``ropelab.rope`` (its
``__init__``), whose own re-exports are edges on to ``ropelab.rope.core`` etc.; ``from ropelab.rope
import frequencies`` is an edge to the module ``ropelab.rope.frequencies``; ``import a.b.c`` is an edge
to ``a.b.c`` only (not to the parent packages Python also runs, or every module would import the root).

Run ``python tests/test_layering.py [SRC_DIR]`` to print every violation of a tree (the expected set
below is not applied there), e.g. of another checkout.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

#: Violations that occur today and are removed by work in flight; each key must still occur (so the set
#: cannot go stale) and nothing else may. The lead empties this set when the branches are merged.
EXPECTED_VIOLATIONS: frozenset[str] = frozenset(
    {
        # empty: a violation that has to stay for a while is listed here with the issue that removes it
    }
)

#: DESIGN.md's "Down only", top to bottom, with the packages it does not name placed by what they import
#: and who imports them. A package may import the packages of lower layers and of its own layer (except
#: :data:`SEPARATE`), nothing above. The root ``ropelab`` (its ``__init__``, the public face) counts as
#: one package; ``fsutil`` and ``errors`` are the floor.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer.split())
    for layer in (
        "__main__",  # python -m ropelab
        "cli",  # parse flags -> one library call -> print
        "results",  # every command's results re-rendered (ropelab report): knows all the job modules
        "evaluate lab finetune search tasks advise",  # the job modules (advise: their public names only)
        "stacks",  # serving-stack checks: tables from report, exports, Ropes
        "hf train data report",  # transformers integration, the loop, corpora, tables/plots/provenance
        "export presets",  # the method for HF/vLLM/llama.cpp; model presets (geometry + rope_parameters)
        "ropelab",  # the root package: ropelab.METHODS, Rope, apply_rotary, make_encoding, ...
        "registry",  # the one method vocabulary (frequency, attention-level methods, encodings)
        "encodings attention",  # the lab's embed/attend contract; attention-level methods + engine
        "rope",  # frequencies, Rope, rotation, inspect
        "kernels",  # fused rotation
        "fsutil",  # atomic files
        "errors",  # the one error type
    )
)

#: Packages of one layer that never import each other: the job modules (DESIGN.md: "finetune knows no
#: lab internals").
SEPARATE = frozenset({"evaluate", "lab", "finetune", "search", "tasks", "advise"})

#: Packages whose submodules ``cli/`` must not import (only their ``__all__``).
CLI_PUBLIC_ONLY = ("ropelab.hf", "ropelab.rope")


# ------------------------------------------------------------------------------------------- graph
@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``target`` (both module names) on ``line`` of the importer, as ``names``."""

    importer: str
    target: str
    line: int
    names: tuple[str, ...]


def module_files(src: Path) -> dict[str, Path]:
    """Every module under ``src/ropelab``: dotted name (a package's ``__init__`` is the package) -> file."""
    out = {}
    for path in sorted((src / "ropelab").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _bound_names(path: Path) -> set[str]:
    """Names a module's top level binds (imports, defs, classes, assignments)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def import_edges(src: Path) -> list[Edge]:
    """Every import of one ropelab module by another, wherever it appears in the file.

    ``from pkg import name`` names the submodule ``pkg.name`` unless ``pkg/__init__`` binds ``name``
    itself (``from ropelab.hf import extend`` is the function the package re-exports, not the module).
    """
    files = module_files(src)
    bound = {module: _bound_names(path) for module, path in files.items() if _is_package(path)}
    edges = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
                    target = next((p for p in prefixes if p in files), None)  # the deepest module named
                    if target is not None and target != module:
                        edges.append(Edge(module, target, node.lineno, ()))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(module, _is_package(path), node)
                names: dict[str, list[str]] = {}  # target -> the names it gives (none for a module)
                for alias in node.names:
                    if f"{base}.{alias.name}" in files and alias.name not in bound.get(base, ()):
                        names.setdefault(f"{base}.{alias.name}", [])
                    else:
                        names.setdefault(base, []).append(alias.name)
                for target, given in names.items():
                    if target in files and target != module:
                        edges.append(Edge(module, target, node.lineno, tuple(given)))
    return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, members of size > 1 only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside the component."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{component} is not a cycle")


# -------------------------------------------------------------------------------------- the checks
def package_of(module: str) -> str:
    """The layer unit of a module: ``ropelab.hf.extend`` -> ``hf``; the root ``ropelab`` -> ``ropelab``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _public_names(path: Path) -> set[str]:
    """A package's ``__all__``, read from its ``__init__`` source."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def attribute_uses(src: Path, module: str) -> list[tuple[str, int]]:
    """Dotted names a module reaches through what it imported: ``import ropelab.hf`` then
    ``ropelab.hf.load.load_model`` gives ``("ropelab.hf.load.load_model", line)``; so does ``from ropelab
    import hf`` then ``hf.load.load_model``. Names bound by imports anywhere in the file count."""
    path = module_files(src)[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, _is_package(path), node)
            aliases.update({alias.asname or alias.name: f"{base}.{alias.name}" for alias in node.names})
    out = []
    for node in ast.walk(tree):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if chain and isinstance(node, ast.Name) and node.id in aliases:
            out.append((".".join([aliases[node.id], *reversed(chain)]), node.lineno))
    return out


def layering_violations(src: Path = SRC) -> dict[str, list[str]]:
    """Every violation of checks (a), (b) and (c) in the tree ``src``: key -> lines that explain it.

    Keys: ``cycle: PKG, PKG`` (the packages a circle spans), ``cli-internal: MODULE -> TARGET``,
    ``upward: PKG -> PKG``, ``sideways: PKG -> PKG`` (two of :data:`SEPARATE`) and ``unlayered: PKG``.
    """
    files = module_files(src)
    edges = import_edges(src)
    graph: dict[str, set[str]] = {module: set() for module in files}
    for edge in edges:
        graph[edge.importer].add(edge.target)
    out: dict[str, list[str]] = {}

    for component in strongly_connected(graph):  # (a)
        packages = sorted({package_of(m) for m in component})
        cycle = shortest_cycle(graph, component)
        out.setdefault(f"cycle: {', '.join(packages)}", []).append(
            f"{' -> '.join(cycle)} (the circle's {len(component)} modules: {', '.join(component)})"
        )

    public = {pkg: _public_names(files[pkg]) for pkg in CLI_PUBLIC_ONLY}  # (b)
    for edge in edges:
        if package_of(edge.importer) != "cli":
            continue
        for pkg in CLI_PUBLIC_ONLY:
            where = f"{files[edge.importer].relative_to(src)}:{edge.line}"
            if edge.target.startswith(pkg + "."):
                out.setdefault(f"cli-internal: {edge.importer} -> {edge.target}", []).append(
                    f"{where} imports the submodule {edge.target}; use {pkg}'s public names"
                )
            elif edge.target == pkg:
                for name in sorted(set(edge.names) - public[pkg]):
                    out.setdefault(f"cli-internal: {edge.importer} -> {pkg}.{name}", []).append(
                        f"{where} imports {name!r}, which is not in {pkg}.__all__"
                    )
    for module in files:
        if package_of(module) != "cli":
            continue
        for dotted, line in sorted(set(attribute_uses(src, module))):
            for pkg in CLI_PUBLIC_ONLY:
                name = dotted[len(pkg) + 1 :].split(".")[0] if dotted.startswith(pkg + ".") else None
                if name is not None and name not in public[pkg]:
                    out.setdefault(f"cli-internal: {module} -> {pkg}.{name}", []).append(
                        f"{files[module].relative_to(src)}:{line} uses {dotted}, past {pkg}.__all__"
                    )

    layer = {pkg: i for i, names in enumerate(LAYERS) for pkg in names}  # (c)
    for edge in edges:
        a, b = package_of(edge.importer), package_of(edge.target)
        if a == b:
            continue
        where = f"{files[edge.importer].relative_to(src)}:{edge.line} imports {edge.target}"
        if a not in layer or b not in layer:
            out.setdefault(f"unlayered: {a if a not in layer else b}", []).append(
                f"{where}: add the package to LAYERS"
            )
        elif layer[b] == layer[a] and a in SEPARATE and b in SEPARATE and edge.target != f"ropelab.{b}":
            # a job module may use another's public API (the lab fine-tunes through ropelab.finetune, as
            # any user would), never its internals
            out.setdefault(f"sideways: {a} -> {b}", []).append(where)
        elif layer[b] < layer[a]:
            out.setdefault(f"upward: {a} -> {b}", []).append(where)
    return out


def _report(found: dict[str, list[str]], keys: set[str]) -> str:
    return "\n".join(f"{key}\n    " + "\n    ".join(found[key]) for key in sorted(keys))


def _check(kinds: tuple[str, ...]) -> None:
    found = {k: v for k, v in layering_violations().items() if k.startswith(kinds)}
    expected = {k for k in EXPECTED_VIOLATIONS if k.startswith(kinds)}
    new = set(found) - expected
    assert not new, "import layering broken:\n" + _report(found, new)
    gone = expected - set(found)
    assert not gone, (
        f"expected violations no longer occur; remove them from EXPECTED_VIOLATIONS: {sorted(gone)}"
    )


# --------------------------------------------------------------------------------------------- tests
def test_no_import_circle_between_modules() -> None:
    _check(("cycle:",))


def test_cli_uses_only_the_public_names_of_hf_and_rope() -> None:
    _check(("cli-internal:",))


def test_imports_go_down_the_layers() -> None:
    _check(("upward:", "sideways:", "unlayered:"))


def test_every_expected_violation_has_a_known_kind() -> None:
    kinds = ("cycle:", "cli-internal:", "upward:", "sideways:", "unlayered:")
    assert all(k.startswith(kinds) for k in EXPECTED_VIOLATIONS)


def test_the_checker_finds_each_kind_of_violation(tmp_path: Path) -> None:
    """A small tree with one violation of each kind, planted the ways the real package could hide them."""
    files = {
        "__init__.py": "from ropelab.rope import Rope\n",
        "errors.py": "",
        "rope/__init__.py": '__all__ = ["Rope"]\nfrom ropelab.rope.core import Rope, secret\n',
        "rope/core.py": "def Rope(): ...\ndef secret(): ...\n",
        # a circle through a lazy import one way and a TYPE_CHECKING import the other
        "rope/frequencies.py": "def f():\n    from .config import RopeConfig\n",
        "rope/config.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ropelab.rope import frequencies\n"
        ),
        "hf/__init__.py": '__all__ = ["extend"]\nfrom ropelab.hf.extend import extend\n',
        "hf/extend.py": "import ropelab.errors\nimport ropelab.data\ndef extend(): ...\n",
        "data/__init__.py": "",  # hf -> data: one layer, allowed
        "lab/__init__.py": "",
        # sideways: job modules never import each other's internals (the public package is fine)
        "lab/run.py": "import ropelab.finetune.job\nfrom ropelab.finetune import job\n",
        "finetune/__init__.py": "",
        "finetune/job.py": "from ..rope import Rope\n",
        "attention/__init__.py": "from ropelab.hf import extend\n",  # upward
        "cli/__init__.py": "",
        "cli/ok.py": "from ropelab.hf import extend\nfrom ropelab.rope import Rope\nimport ropelab\n",
        "cli/bad.py": "from ropelab.rope import secret, Rope\nimport ropelab.rope.core as core\n",
        # reaching past __all__ through attributes of what it imported
        "cli/sly.py": "import ropelab.hf\nfrom ropelab import rope as r\nropelab.hf.load.f()\nr.core.f()\n",
        "newpkg.py": "from ropelab.errors import RopeConfigError\n",  # not in LAYERS
    }
    for name, text in files.items():
        path = tmp_path / "ropelab" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    found = layering_violations(tmp_path)
    assert set(found) == {
        "cycle: rope",
        "cli-internal: ropelab.cli.bad -> ropelab.rope.secret",
        "cli-internal: ropelab.cli.bad -> ropelab.rope.core",
        "cli-internal: ropelab.cli.sly -> ropelab.hf.load",
        "cli-internal: ropelab.cli.sly -> ropelab.rope.core",
        "sideways: lab -> finetune",
        "upward: attention -> hf",
        "unlayered: newpkg",
    }, found
    assert found["cycle: rope"][0].startswith(
        "ropelab.rope.config -> ropelab.rope.frequencies -> ropelab.rope.config"
    )


if __name__ == "__main__":
    found = layering_violations(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC)
    print(_report(found, set(found)) or "no violations")
