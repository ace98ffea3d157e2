"""The house's floors hold by themselves: no module imports a higher layer, only the two
shells import ``digests``, and no import circle exists anywhere (docs/architecture.md).

Imports are read from the source (AST), function-level ones included: a lazy import is still
a dependency. ``if TYPE_CHECKING:`` imports count too; they are dependencies of the types.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crawler", "spiders", "digests")

#: Bottom up. A module belongs to the first entry its dotted name starts with.
LAYERS: list[tuple[int, str]] = [
    (3, "crawler.cli"),
    (3, "crawler.daemon"),
    (2, "crawler.ingest"),
    (2, "crawler.export"),
    (2, "spiders"),
    (2, "digests"),
    (1, "crawler.db"),
    (0, "crawler"),
]
SHELLS = ("crawler.cli", "crawler.daemon")


def layer_of(module: str) -> int:
    for level, prefix in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    raise ValueError(f"{module} is in no layer")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the three packages (Alembic's migration scripts are data, not code)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[module_name(path, root)] = path
    return found


def imports_of(path: Path, module: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported project module, line) for each import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolve(alias.name, known, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # "from crawler.db import meta" imports the module crawler.db.meta.
                target = f"{base}.{alias.name}"
                yield from _resolve(target if target in known else base, known, node.lineno)


def _resolve(name: str, known: set[str], line: int) -> Iterator[tuple[str, int]]:
    while name and name not in known:
        name = name.rpartition(".")[0]
    if name:
        yield name, line


def violations(root: Path) -> list[str]:
    """Every upward import and every import of ``digests`` from outside the shells."""
    modules = project_modules(root)
    found = []
    for module, path in modules.items():
        for target, line in imports_of(path, module, set(modules)):
            where = f"{path.relative_to(root)}:{line}"
            if layer_of(target) > layer_of(module):
                found.append(
                    f"{where}: {module} (layer {layer_of(module)}) imports {target} "
                    f"(layer {layer_of(target)}), a higher layer"
                )
            elif (
                _within(target, "digests")
                and not _within(module, "digests")
                and not any(_within(module, shell) for shell in SHELLS)
            ):
                found.append(f"{where}: {module} imports {target}; only the shells may")
    return found


def circles(root: Path) -> list[list[str]]:
    """Import circles between modules (a package's ``__init__`` importing its own children
    is how a package re-exports, not a circle, unless a child imports the package back)."""
    modules = project_modules(root)
    graph = {
        m: sorted({t for t, _ in imports_of(p, m, set(modules)) if t != m})
        for m, p in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_a_higher_layer() -> None:
    assert violations(ROOT) == []


def test_no_import_circle() -> None:
    assert circles(ROOT) == []


def test_every_module_has_a_layer() -> None:
    for module in project_modules(ROOT):
        layer_of(module)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if str(parent) != ".":
                (tmp_path / parent / "__init__.py").touch()
        path.write_text(body)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"crawler/db/store.py": "def f():\n    from crawler.ingest.runner import x\n"},
            "crawler/db/store.py:2: crawler.db.store (layer 1) imports crawler.ingest.runner",
        ),
        (
            {"crawler/normalise.py": "from crawler.db import engine\n"},
            "crawler/normalise.py:1: crawler.normalise (layer 0) imports crawler.db.engine",
        ),
        (
            {"crawler/ingest/runner.py": "from digests import send\n"},
            "crawler/ingest/runner.py:1: crawler.ingest.runner imports digests.send; only",
        ),
        (
            {"spiders/feed.py": "import crawler.cli.app\n"},
            "spiders/feed.py:1: spiders.feed (layer 2) imports crawler.cli.app (layer 3)",
        ),
    ],
)
def test_the_rule_catches_an_upward_import(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    base = {
        "crawler/db/engine.py": "",
        "crawler/ingest/runner.py": "",
        "crawler/cli/app.py": "",
        "digests/send.py": "",
    }
    root = _tree(tmp_path, base | files)
    found = violations(root)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_rule_allows_shells_and_lower_layers(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "crawler/db/engine.py": "",
            "crawler/settings.py": "",
            "crawler/db/store.py": (
                "from crawler.db.engine import x\nfrom crawler import settings\n"
            ),
            "digests/send.py": "from crawler.db import engine\n",
            "crawler/cli/app.py": "from digests import send\nfrom crawler.daemon import jobs\n",
            "crawler/daemon/jobs.py": "from digests.send import y\n",
        },
    )
    assert violations(root) == []


def test_circles_are_found_with_their_members(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "crawler/cli/app.py": "from crawler.cli import cmds\n",
            "crawler/cli/cmds.py": "def f():\n    from crawler.cli.app import App\n",
            "crawler/cli/context.py": "",
        },
    )
    assert circles(root) == [["crawler.cli.app", "crawler.cli.cmds"]]
