"""The backbone registry: every frozen encoder the extract stage can run, read from TOML files.

The built-in entries live in `extract/registry/*.toml` inside the package. A user adds their
own with `--registry FILE` or with the environment variable ADAPTOR_REGISTRY (one or more
files, separated like PATH). Two ad-hoc schemes need no file: `timm:<model name with tag>` and
`hf:<hub id>` (see `extract.adhoc`). Every entry, wherever it comes from, becomes the same
`BackboneSpec`, and its embedding-relevant fields go into a store's provenance the same way.

A registry file holds one table per backbone:

    [backbones.my-vit]
    modality = "image"
    source = "timm"                      # timm, transformers or torchxrayvision
    model_id = "vit_base_patch16_224.augreg_in21k"
    dim = 768
    pooling = "cls"                      # cls, mean or pooler
    notes = "what the values rest on"
    [backbones.my-vit.image]
    steps = [{ op = "resize_shortest", size = 248, interpolation = "bicubic" },
             { op = "center_crop", size = 224 }]
    mean = [0.5, 0.5, 0.5]
    std = [0.5, 0.5, 0.5]
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.extract.adhoc import ADHOC_SCHEMES, adhoc_spec
from adaptor_vlp.extract.backbone_spec import (
    DEFAULT_MAX_LENGTH,
    RANDOM_INIT_PREFIX,
    BackboneSpec,
    ImagePreprocessing,
    ImageStep,
    Interpolation,
    Pooling,
    PositionEmbedding,
    RandomTextConfig,
    Source,
    SpecError,
    StepOp,
)
from adaptor_vlp.extract.text_cleaning import TextCleaning

__all__ = [
    "ADHOC_SCHEMES", "BUILTIN_REGISTRY", "DEFAULT_MAX_LENGTH", "MINILM_NAME", "RANDOM_INIT_PREFIX", "REGISTRY_ENV",
    "BackboneSpec", "ImagePreprocessing", "ImageStep", "Interpolation", "Modality", "Pooling", "RandomTextConfig",
    "Registry", "RegistryEntry", "RegistryError", "Source", "SpecError", "StepOp", "UnknownBackbone", "get_spec",
    "load_registry",
]

REGISTRY_ENV = "ADAPTOR_REGISTRY"
"""Environment variable naming registry files read after the built-in ones (separated like PATH)."""
BUILTIN_REGISTRY = "registry"
"""The folder of built-in registry files inside the `adaptor_vlp.extract` package."""
BUILTIN_FILES = ("paper.toml", "chest-xray.toml", "demo-and-tests.toml")
"""The built-in registry files, in listing order: the paper's backbones first."""
BUILTIN_ORIGIN = "built-in "
MINILM_NAME = "minilm"


class RegistryError(SpecError):
    """A registry file that cannot be read or holds an entry that cannot be used."""


class UnknownBackbone(LookupError):
    """A backbone name that is in no registry file and uses no ad-hoc scheme."""


@dataclass(frozen=True)
class RegistryEntry:
    """A backbone and where it was defined (a registry file, or an ad-hoc scheme)."""

    spec: BackboneSpec
    origin: str


class Registry:
    """Backbones by name (and modality, for two-tower models), each with its origin.

    Ad-hoc `timm:` / `hf:` names are resolved on lookup.
    """

    def __init__(self, entries: Iterable[RegistryEntry]) -> None:
        self._entries = {(entry.spec.name, entry.spec.modality): entry for entry in entries}

    def __contains__(self, name: str) -> bool:
        return any(entry_name == name for entry_name, _ in self._entries)

    def entries(self) -> list[RegistryEntry]:
        """Every named entry, in file order."""
        return list(self._entries.values())

    def get(self, name: str, modality: Modality | None = None) -> BackboneSpec:
        """The backbone called `name`; `modality` picks the tower of a two-tower model.

        An unknown name's error lists the known ones and the ad-hoc schemes.
        """
        if name.startswith(ADHOC_SCHEMES):
            return adhoc_spec(name, modality)
        towers = {entry_modality: entry.spec for (entry_name, entry_modality), entry in self._entries.items()
                  if entry_name == name}
        if modality is not None and modality in towers:
            return towers[modality]
        if len(towers) == 1:
            return next(iter(towers.values()))  # of another modality: the encoder loader says so
        if towers:
            raise UnknownBackbone(f"backbone {name!r} has an image and a text tower; say which modality you want")
        known = ", ".join(sorted({entry_name for entry_name, _ in self._entries}))
        raise UnknownBackbone(
            f"unknown backbone {name!r}; known backbones: {known}; or name a model directly as "
            f"timm:<model name> or hf:<hub id>, or add an entry with --registry FILE"
        )


def load_registry(files: Iterable[Path] = ()) -> Registry:
    """The built-in entries, then those of the files in ADAPTOR_REGISTRY, then those of `files`.

    A name may be defined once: a file that redefines a built-in or another file's entry is
    refused, naming both files, so a store's backbone name always means one thing.
    """
    origins = {entry.spec.name: entry.origin for entry in _builtin_entries()}
    user_entries: list[RegistryEntry] = []
    read: set[Path] = set()
    for path in (*_environment_files(), *(Path(file) for file in files)):
        if path.resolve() in read:  # the same file named twice (in ADAPTOR_REGISTRY and --registry)
            continue
        read.add(path.resolve())
        for name, towers in _group_by_name(_read_registry_file(path)).items():
            if name in origins:
                raise RegistryError(f"{path}: backbone {name!r} is already defined in {origins[name]}; "
                                    "give your entry another name")
            origins[name] = str(path)
            user_entries.extend(towers)
    return Registry([*_builtin_entries(), *user_entries])


def get_spec(name: str, registry: Sequence[Path] = (), modality: Modality | None = None,
             max_length: int | None = None) -> BackboneSpec:
    """The backbone called `name`, from the built-in registry, ADAPTOR_REGISTRY, `registry` files or an ad-hoc name.

    `max_length` (the `--max-length` option) caps a text backbone's length in tokens; an ad-hoc
    text model's own maximum (often 512) is capped at the paper's 112 unless it is given.
    """
    spec = load_registry(registry).get(name, modality)
    cap = max_length if max_length is not None else DEFAULT_MAX_LENGTH if name.startswith(ADHOC_SCHEMES) else None
    if cap is not None and spec.modality is Modality.TEXT and spec.max_length > cap:
        spec = dataclasses.replace(spec, max_length=cap)
    return spec


@lru_cache(maxsize=1)
def _builtin_entries() -> tuple[RegistryEntry, ...]:
    folder = resources.files("adaptor_vlp.extract").joinpath(BUILTIN_REGISTRY)
    entries: list[RegistryEntry] = []
    origins: dict[str, str] = {}
    for filename in BUILTIN_FILES:
        for name, towers in _group_by_name(_read_registry_file(Path(str(folder.joinpath(filename))))).items():
            if name in origins:
                raise RegistryError(f"{filename}: built-in backbone {name!r} is also defined in {origins[name]}")
            origins[name] = filename
            entries.extend(RegistryEntry(entry.spec, f"{BUILTIN_ORIGIN}{filename}") for entry in towers)
    return tuple(entries)


def _group_by_name(entries: list[RegistryEntry]) -> dict[str, list[RegistryEntry]]:
    grouped: dict[str, list[RegistryEntry]] = {}
    for entry in entries:
        grouped.setdefault(entry.spec.name, []).append(entry)
    return grouped


def _environment_files() -> list[Path]:
    value = os.environ.get(REGISTRY_ENV, "")
    return [Path(part) for part in value.split(os.pathsep) if part]


def _read_registry_file(path: Path) -> list[RegistryEntry]:
    """The file's entries: one per backbone, two for a table whose modality lists both towers."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"registry file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RegistryError(f"registry file {path} is not readable TOML: {error}") from None
    unknown = sorted(set(document) - {"backbones"})
    if unknown:
        raise RegistryError(f"{path}: unknown top-level table(s) {', '.join(unknown)}; entries go in [backbones.NAME]")
    tables = document.get("backbones", {})
    if not isinstance(tables, dict) or not tables:
        raise RegistryError(f"{path} defines no backbone; add a [backbones.NAME] table")
    entries = []
    for name, table in tables.items():
        if name.startswith(ADHOC_SCHEMES):
            raise RegistryError(
                f"{path}: backbone name {name!r} starts with an ad-hoc scheme ({', '.join(ADHOC_SCHEMES)})"
            )
        entries.extend(RegistryEntry(spec, str(path)) for spec in _specs_from_table(path, name, table))
    return entries


_SPEC_KEYS = {f.name for f in fields(BackboneSpec)} - {"name"}
_IMAGE_KEYS = {"steps", "channels", "mean", "std", "decode_size"}
_STEP_KEYS = {"op", "size", "interpolation", "rounded"}


def _specs_from_table(path: Path, name: str, table: Any) -> list[BackboneSpec]:
    """One registry table as specs (one per modality listed); every problem names the file, entry and key."""
    where = f"{path}: backbone {name!r}"
    if not isinstance(table, dict):
        raise RegistryError(f"{where} must be a table")
    _refuse_unknown_keys(where, table, _SPEC_KEYS)
    for required in ("modality", "source", "model_id", "dim", "pooling"):
        if required not in table:
            raise RegistryError(f"{where} lacks {required!r}")
    values = dict(table)
    modalities = values.pop("modality")
    modalities = modalities if isinstance(modalities, list) else [modalities]
    try:
        values["source"] = _choice(where, "source", Source, values["source"])
        values["pooling"] = _choice(where, "pooling", Pooling, values["pooling"])
        if "text_cleaning" in values:
            values["text_cleaning"] = _choice(where, "text_cleaning", TextCleaning, values["text_cleaning"])
        if "position_embedding" in values:
            values["position_embedding"] = _choice(where, "position_embedding", PositionEmbedding,
                                                   values["position_embedding"])
        if "image" in values:
            values["image"] = _image_from_table(f"{where}, [image]", values["image"])
        if "random_text_config" in values:
            config = values["random_text_config"]
            if not isinstance(config, dict):
                raise RegistryError(f"{where}: random_text_config must be a table")
            _refuse_unknown_keys(f"{where}, [random_text_config]", config, {f.name for f in fields(RandomTextConfig)})
            values["random_text_config"] = RandomTextConfig(**config)
        image = values.pop("image", None)
        return [BackboneSpec(name=name, modality=modality, image=image if modality is Modality.IMAGE else None,
                             **values)
                for modality in (_choice(where, "modality", Modality, item) for item in modalities)]
    except TypeError as error:
        raise RegistryError(f"{where}: {error}") from None
    except RegistryError:
        raise
    except SpecError as error:
        raise RegistryError(f"{path}: {error}") from None


def _image_from_table(where: str, table: Any) -> ImagePreprocessing:
    if not isinstance(table, dict):
        raise RegistryError(f"{where} must be a table")
    _refuse_unknown_keys(where, table, _IMAGE_KEYS)
    steps_table = table.get("steps")
    if not isinstance(steps_table, list) or not steps_table:
        raise RegistryError(f"{where} needs steps = [ {{ op = ... }}, ... ]")
    steps = []
    for index, step in enumerate(steps_table):
        step_where = f"{where}, step {index + 1}"
        if not isinstance(step, dict) or "op" not in step:
            raise RegistryError(f"{step_where} must be an inline table with an op")
        _refuse_unknown_keys(step_where, step, _STEP_KEYS)
        interpolation = step.get("interpolation")
        try:
            steps.append(ImageStep(
                op=_choice(step_where, "op", StepOp, step["op"]),
                size=step.get("size"),
                interpolation=None if interpolation is None else _choice(step_where, "interpolation", Interpolation,
                                                                         interpolation),
                rounded=step.get("rounded", True),
            ))
        except SpecError as error:
            raise RegistryError(f"{step_where}: {error}") from None
    channels = table.get("channels", 3)
    try:
        return ImagePreprocessing(
            steps=tuple(steps), channels=channels,
            mean=tuple(table.get("mean", (0.5,) * channels)), std=tuple(table.get("std", (0.5,) * channels)),
            decode_size=table.get("decode_size"),
        )
    except (SpecError, TypeError) as error:
        raise RegistryError(f"{where}: {error}") from None


def _choice(where: str, key: str, enum: type[Enum], value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise RegistryError(f"{where}: {key} = {value!r} is not one of {allowed}") from None


def _refuse_unknown_keys(where: str, table: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
