"""The import rules of ARCHITECTURE.md, read from the import statements of every module.

- Every first-party import goes through the `adaptor_vlp` namespace: no module imports a bare
  `extract`, `train`, `evaluate` or `cache_schema`.
- `cache_schema` (the on-disk format) imports no other stage; `extract` and `train` import only
  `cache_schema`; `evaluate` imports `cache_schema` and `train`; the umbrella package
  (`adaptor_vlp` itself: the console command and the study runner) may import every stage.
- `protocols` (downstream protocols as data) is a leaf: it imports no other first-party package;
  `extract` and `evaluate` may read it.
- `train` and `evaluate` never open an image or run a backbone: they import no image decoder and
  no backbone library.
- Only a command-line module (`cli.py`, `__main__.py`) imports a `cli` module: what a command and
  the study runner share (a dataset layout, an error type) lives in the stage's library modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
STAGES = ("cache_schema", "extract", "train", "evaluate", "protocols")
ALLOWED_STAGES = {
    "cache_schema": set(),
    "extract": {"cache_schema", "protocols"},
    "train": {"cache_schema"},
    "evaluate": {"cache_schema", "train", "protocols"},
    "protocols": set(),
}
IMAGE_OR_BACKBONE_LIBRARIES = {"PIL", "pydicom", "cv2", "timm", "transformers", "torchvision", "torchxrayvision"}
NO_IMAGE_STAGES = ("train", "evaluate")
CLI_MODULE_NAMES = {"cli.py", "__main__.py"}


def _modules(folder: str) -> list[Path]:
    return sorted(path for path in (REPOSITORY / folder).rglob("*.py") if "__pycache__" not in path.parts)


def _imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in a module, relative imports resolved.

    `from a.b import c` yields both `a.b` and `a.b.c`, so a module imported by name (`from
    adaptor_vlp.extract import cli`) is seen as well as its package.
    """
    folders = path.relative_to(REPOSITORY).parent.parts
    package = ".".join(folders if folders[0] == "adaptor_vlp" else ("adaptor_vlp", *folders))
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.append((node.lineno, module))
            names.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)  # a module imported by name
    return names


def _stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "adaptor_vlp" and len(parts) > 1 and parts[1] in STAGES else None


@pytest.mark.parametrize("folder", ("adaptor_vlp", *STAGES, "tests", "bench"))
def test_no_module_imports_a_stage_outside_the_namespace(folder):
    bare = [f"{path.relative_to(REPOSITORY)}:{line}: {name}"
            for path in _modules(folder) for line, name in _imported_names(path)
            if name.split(".")[0] in STAGES]

    assert bare == []


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_imports_only_the_stages_it_may(stage):
    broken = [f"{path.relative_to(REPOSITORY)}:{line}: {name}"
              for path in _modules(stage) for line, name in _imported_names(path)
              if (other := _stage_of(name)) not in (None, stage) and other not in ALLOWED_STAGES[stage]]

    assert broken == []


@pytest.mark.parametrize("stage", NO_IMAGE_STAGES)
def test_train_and_evaluate_import_no_image_decoder_or_backbone_library(stage):
    broken = [f"{path.relative_to(REPOSITORY)}:{line}: {name}"
              for path in _modules(stage) for line, name in _imported_names(path)
              if name.split(".")[0] in IMAGE_OR_BACKBONE_LIBRARIES]

    assert broken == []


@pytest.mark.parametrize("folder", ("adaptor_vlp", *STAGES, "bench"))
def test_only_a_command_line_module_imports_a_cli_module(folder):
    broken = [f"{path.relative_to(REPOSITORY)}:{line}: {name}"
              for path in _modules(folder) if path.name not in CLI_MODULE_NAMES
              for line, name in _imported_names(path) if "cli" in name.split(".")]

    assert broken == []


def test_the_rules_see_imports_at_all():
    """Guards the tests above against a parser that finds nothing (they would pass vacuously)."""
    names = {name for path in _modules("evaluate") for _, name in _imported_names(path)}

    assert "adaptor_vlp.cache_schema.manifest" in names
    assert any(_stage_of(name) == "train" for name in names)
    cli_imports = {name for _, name in _imported_names(REPOSITORY / "adaptor_vlp" / "cli.py")}
    assert "adaptor_vlp.extract.cli" in cli_imports
