"""The distribution installs one import namespace, `adaptor_vlp`, and works beside packages named like its stages.

Three of the stage folders' names (`extract`, `train`, `evaluate`) are also PyPI packages; Hugging
Face's `evaluate` sits in most environments that hold `transformers`. These tests prove that the
tool never imports a top-level module of those names and that the wheel installs nothing else.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
STAGE_FOLDERS = ("extract", "train", "evaluate", "cache_schema")
SOURCE_FOLDERS = (*STAGE_FOLDERS, "protocols")
"""Every folder the wheel maps under `adaptor_vlp`: the stages (each with a command) and the protocols' data package."""
CLASHING_NAMES = ("extract", "train", "evaluate", "cache_schema")
COMMANDS = ([], ["extract"], ["train"], ["evaluate"], ["cache"])


def _write_raising_stubs(folder: Path) -> None:
    """Top-level packages with the stages' generic names whose import fails loudly."""
    for name in CLASHING_NAMES:
        package = folder / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('the stub top-level package {name!r} was imported')\n")


def _environment_with(path_first: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(path_first), "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "adaptor")
def test_every_command_works_beside_top_level_packages_named_like_the_stages(command, tmp_path):
    _write_raising_stubs(tmp_path / "stubs")
    console_script = Path(sys.executable).with_name("adaptor")

    completed = subprocess.run([str(console_script), *command, "--help"], capture_output=True, text=True,
                               cwd=tmp_path, env=_environment_with(tmp_path / "stubs"), timeout=120)

    assert completed.returncode == 0, completed.stderr
    assert "Usage" in completed.stdout


@pytest.mark.slow
def test_python_dash_m_runs_each_stage_under_the_namespace(tmp_path):
    _write_raising_stubs(tmp_path)
    for module in ("adaptor_vlp", *(f"adaptor_vlp.{stage}" for stage in STAGE_FOLDERS)):
        completed = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                   cwd=tmp_path, env=_environment_with(tmp_path), timeout=120)
        assert completed.returncode == 0, (module, completed.stderr)
        assert f"python -m {module}" in completed.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package sources (no build isolation: nothing is downloaded)."""
    source = tmp_path_factory.mktemp("source")
    for folder in ("adaptor_vlp", *SOURCE_FOLDERS):
        shutil.copytree(REPOSITORY / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / file, source / file)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("adaptor_vlp-*.whl")
    return built


def test_the_wheel_installs_no_top_level_module_but_adaptor_vlp(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    dist_info = next(name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info"))
    declared = zipfile.ZipFile(wheel).read(f"{dist_info}/top_level.txt").decode().split()

    assert top_level == {"adaptor_vlp"}
    assert declared == ["adaptor_vlp"]


def test_the_wheel_holds_every_module_and_data_file_of_the_stage_folders(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"adaptor_vlp/{stage}/{path.relative_to(REPOSITORY / stage).as_posix()}"
                for stage in SOURCE_FOLDERS
                for path in (REPOSITORY / stage).rglob("*")
                if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts}

    assert expected, "no stage files found"
    assert sorted(expected - names) == []


@pytest.mark.slow
def test_the_installed_wheel_runs_from_its_own_files(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    _write_raising_stubs(tmp_path / "stubs")
    code = ("import adaptor_vlp.evaluate.cli, adaptor_vlp.cli\n"
            "print(adaptor_vlp.evaluate.cli.__file__)")
    path = os.pathsep.join((str(target), str(tmp_path / "stubs")))

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": path}, timeout=120)

    assert completed.returncode == 0, completed.stderr
    assert Path(completed.stdout.strip()).is_relative_to(target)
