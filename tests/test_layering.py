"""The package's layers import downwards only: models -> ops ... -> cli, no cycles (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import dimexport

ROOT = Path(dimexport.__file__).parent

# Lower layers first; a module may import its own layer and those before it, never one after it.
LAYERS = [
    {"errors", "configs", "libraries", "cache", "__init__"},
    {"ops"},
    {"models"},
    {"export"},
    {"trt"},
    {"runtime"},
    {"diffusion"},
    {"verify", "train", "serve"},
    {"environment", "cli"},
]


def layer_of(part: str) -> int:
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"dimexport.{part} is in no layer of tests/test_layering.py: add it")


def imported_parts(path: Path) -> set[str]:
    """Top-level dimexport sub-packages/modules a file imports, anywhere in it (function-level imports too)."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dimexport.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("dimexport."):
                    found.add(node.module.split(".")[1])
                continue
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            else:  # `from . import x` at the package root: a module, or a name of dimexport/__init__.py
                found |= {a.name if (ROOT / a.name).is_dir() or (ROOT / f"{a.name}.py").is_file() else "__init__"
                          for a in node.names}
    return found


def test_imports_point_down_the_layers() -> None:
    violations = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for part in imported_parts(path):
            if part != own and layer_of(part) > layer_of(own):
                violations.append(f"{rel} imports dimexport.{part} (layer {layer_of(part)} > {layer_of(own)})")
    assert not violations, "\n".join(violations)


def test_build_does_not_import_verify_and_native_location_has_one_owner() -> None:
    assert "verify" not in imported_parts(ROOT / "trt" / "build.py")
    names = {"DIMEXPORT_SCAN_LIB", "DIMEXPORT_TRT_PLUGIN_LIB", "libdimexport_scan.so", "libdimexport_trt_plugin.so", "lib"}
    owners = sorted(
        str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
        if any(isinstance(n, ast.Constant) and n.value in names for n in ast.walk(ast.parse(p.read_text())))
    )
    assert owners == ["libraries.py"], owners
