"""The proxy's layers import only downwards: core ← upstream, audit ← services ← api ← main, cli.

Read from the source with `ast` (every import, also those inside functions and TYPE_CHECKING
blocks), so a violation fails here before it becomes an import cycle or a core module that
cannot be used without the web app.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"

# Each layer and the other layers it may import. A layer is a subpackage or top-level module of
# `proxy`; it may always import itself and the package root (which holds only the version).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "upstream": {"core"},
    "audit": {"core"},
    "migrations": {"core"},
    # The API's request and response models: plain pydantic, used by services and routes.
    "schemas": set(),
    "services": {"core", "upstream", "audit", "schemas"},
    "api": {"core", "upstream", "audit", "schemas", "services"},
    "main": {"core", "upstream", "audit", "schemas", "services", "api"},
    "cli": {"core", "upstream", "audit", "schemas", "services", "api", "main"},
    "__main__": {"cli"},
}
ROOT = ""


def layer_of_file(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ROOT if parts == ("__init__",) else parts[0]


def layer_of_module(name: str) -> str | None:
    """The layer of a module of `proxy`, or None for anything else."""
    parts = name.split(".")
    if parts[0] != "proxy":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else ROOT


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(("proxy", *path.relative_to(PACKAGE).parent.parts))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from proxy import schemas` imports the module proxy.schemas.
            found += [(node.lineno, f"{base}.{alias.name}" if base == "proxy" else base)
                      for alias in node.names]
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def violations(layer: str) -> list[str]:
    allowed = ALLOWED[layer] | {layer, ROOT}
    found = []
    for path in sources():
        if layer_of_file(path) != layer:
            continue
        for line, module in imported_modules(path):
            target = layer_of_module(module)
            if target is not None and target not in allowed:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


def test_every_module_belongs_to_a_layer() -> None:
    unknown = {str(p.relative_to(PACKAGE.parent)) for p in sources()
               if layer_of_file(p) not in ALLOWED and layer_of_file(p) != ROOT}
    assert not unknown, f"give these a layer in ALLOWED: {sorted(unknown)}"


def test_core_imports_nothing_from_the_layers_above_it() -> None:
    above = ("proxy.api", "proxy.services", "proxy.audit", "proxy.upstream")
    imports = [(path, module) for path in sources() if layer_of_file(path) == "core"
               for _, module in imported_modules(path)]
    assert imports, "no module of proxy.core was read"
    assert [(str(p), m) for p, m in imports if m.startswith(above)] == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    assert violations(layer) == []
