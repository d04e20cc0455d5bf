"""The package's layers only point down.

Every module of ``wavediff/`` belongs to one layer; an import (at module level or inside a
function) may name its own layer or a lower one, never a higher one:

    cli  >  vocoder, compat  >  train, inference, importers
         >  model, diffusion, evaluation  >  audio, config, checkpoint, pretrained
         >  helpers (errors, version, _fields, _files, precision, hardware, distributed,
            onnx_decoder, streaming_core, phase_vocoder)

Run as a script to print every offending import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wavediff"

LAYERS: dict[str, int] = {
    "errors": 0, "version": 0, "_fields": 0, "_files": 0, "precision": 0, "hardware": 0,
    "distributed": 0,
    "onnx_decoder": 0,  # standalone (copied into exported folders): imports nothing of wavediff
    "streaming_core": 0,  # the streaming scheduler, copied beside onnx_decoder: pure Python
    "phase_vocoder": 0,  # numpy only, copied beside onnx_decoder
    "audio": 1, "config": 1, "checkpoint": 1, "pretrained": 1,
    "model": 2, "diffusion": 2, "evaluation": 2,
    "train": 3, "inference": 3, "importers": 3,
    "vocoder": 4, "compat": 4,
    "cli": 5,
    "__init__": 6, "__main__": 6,  # the package's front door may re-export anything
}


def component(module: str) -> str:
    """``wavediff.audio.mel`` -> ``audio``; ``wavediff`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else parts
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """Every ``wavediff`` module a file imports, with its line; relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("wavediff")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "wavediff":  # "from wavediff import x": x is a component
                found += [(node.lineno, f"wavediff.{a.name}") for a in node.names]
            elif name.startswith("wavediff"):
                found.append((node.lineno, name))
    return found


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if path.name == "__init__.py" and path.parent == PACKAGE:
            own = LAYERS["__init__"]
        else:
            own = LAYERS[component(module)]
        for line, target in imported_modules(path, module):
            name = component(target)
            if name not in LAYERS:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target} is in no layer")
            elif LAYERS[name] > own:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {target} "
                           f"(layer {LAYERS[name]}) from layer {own}")
    return bad


def test_every_component_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert names <= set(LAYERS), f"components without a layer: {sorted(names - set(LAYERS))}"


def test_imports_only_point_down():
    assert violations() == []


def test_the_walker_sees_an_upward_import(tmp_path):
    # the check can fail: a function-level import of cli from audio is caught
    src = tmp_path / "wavediff" / "audio"
    src.mkdir(parents=True)
    (src / "x.py").write_text("def f():\n    from wavediff.cli.common import read_scp\n")
    found = imported_modules(src / "x.py", "wavediff.audio.x")
    assert found == [(2, "wavediff.cli.common")]
    assert LAYERS[component(found[0][1])] > LAYERS["audio"]


if __name__ == "__main__":
    print("\n".join(violations()) or "no upward imports")
