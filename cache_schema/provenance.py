"""What produced a store, stored beside its data and checked before the data is used."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Mapping

from adaptor_vlp.cache_schema.layout import Modality


class ProvenanceMismatch(ValueError):
    """A store was built with other settings than the caller asked for."""

    def __init__(self, store: str, field_name: str, expected: Any, found: Any) -> None:
        self.store = store
        self.field_name = field_name
        self.expected = expected
        self.found = found
        super().__init__(
            f"{store}: provenance field '{field_name}' differs: expected {expected!r}, found {found!r}. "
            "Use a store built with these settings, or rebuild it (extract with --overwrite)."
        )


class IncompleteProvenance(ValueError):
    """A store's provenance block lacks fields or holds values of the wrong type."""


def code_version() -> str:
    """The installed adaptor-vlp version, recorded so a store says which code wrote it."""
    try:
        return version("adaptor-vlp")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Provenance:
    """Everything that decides a store's bytes: dataset, manifest, backbone, weights, preprocessing."""

    dataset: str
    manifest_sha256: str
    modality: Modality
    backbone: str
    weights_id: str
    weights_sha256: str
    preprocessing: Mapping[str, Any]
    pooling: str
    dtype: str = "float16"
    code_version: str = field(default_factory=code_version)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict, with preprocessing normalised so that a round trip compares equal."""
        data = asdict(self)
        data["modality"] = Modality(self.modality).value
        data["preprocessing"] = json.loads(json.dumps(dict(self.preprocessing), sort_keys=True))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], store: str = "store") -> "Provenance":
        """Reads a provenance block, naming the store and the missing fields when it is incomplete."""
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise IncompleteProvenance(f"{store}: provenance lacks {', '.join(missing)}; rebuild the store.")
        try:
            modality = Modality(data["modality"])
        except ValueError:
            raise IncompleteProvenance(f"{store}: provenance modality {data['modality']!r} is not one of "
                                       f"{[m.value for m in Modality]}.") from None
        return cls(**{**{name: data[name] for name in names}, "modality": modality})


RESUME_IGNORED_FIELDS = frozenset({"created"})
"""Fields that may differ between a store and the run resuming it: everything else must match."""


def check_provenance(store: str, found: Provenance, expected: Mapping[str, Any]) -> None:
    """Raises ProvenanceMismatch on the first expected field whose value differs from the store's."""
    found_json = found.to_json()
    for name, value in expected.items():
        if name not in found_json:
            raise KeyError(f"'{name}' is not a provenance field; known: {sorted(found_json)}")
        difference = _first_difference(name, _normalise(value), found_json[name])
        if difference is not None:
            raise ProvenanceMismatch(store, *difference)


FEATURE_DEFINING_FIELDS = ("modality", "backbone", "weights_id", "weights_sha256", "pooling", "dtype")
"""Fields two stores must share for their embeddings to live in one space (any dataset, any manifest)."""

SPACE_NEUTRAL_PREPROCESSING = ("tokens", "views", "forward_precision", "decode_size", "reduced_decode_frame",
                               "decoder", "feature_maps")
"""Preprocessing entries that do not move a store's embeddings to another space: which extra arrays
it holds, the forward pass's arithmetic (bf16 and float32 runs of one backbone agree to within
bf16 rounding: cosine 0.99998 for real MiniLM weights), and the resolution images were decoded at
before the same steps, the frame a reduced decode's first resize takes its shape from (JPEG DCT
scaling changes the pixels by about half a grey level) and the JPEG decoder (a device decoder's
IDCT differs from libjpeg-turbo's in the last bits). A resumed run
must still match them all."""


INPUT_FRAME_PREPROCESSING = ("geometry", "image_size", "mean", "std")
"""The input frame: which part of the radiograph the backbone sees, at what size and how its grey levels are
normalised. A segmentation task reads its own frame (the published runs: the whole image at 896 px for SIIM,
normalised to [-1, 1] for every backbone) through an Adaptor trained in another."""


def check_same_embedding_space(store: str, found: Provenance, reference: Mapping[str, Any],
                               any_input_frame: bool = False) -> None:
    """Raises ProvenanceMismatch unless `found` embeds like `reference` (e.g. the store an Adaptor was trained on).

    Backbone, weights, pooling, dtype and preprocessing must match; the dataset may differ, and so
    may the extra arrays stored (tokens, views) and the forward pass's precision. With `any_input_frame` the
    image's frame may differ too (`INPUT_FRAME_PREPROCESSING`); the weights must still be the same bytes, which
    they are for the DINOv2 entries (their position table stays at 518 px) but not for a timm model whose
    table is resampled to its input at load.
    """
    neutral = SPACE_NEUTRAL_PREPROCESSING + (INPUT_FRAME_PREPROCESSING if any_input_frame else ())
    check_provenance(store, found, {name: reference[name] for name in FEATURE_DEFINING_FIELDS})
    comparable = {k: v for k, v in reference["preprocessing"].items() if k not in neutral}
    found_preprocessing = {k: v for k, v in found.to_json()["preprocessing"].items() if k not in neutral}
    difference = _first_difference("preprocessing", _normalise(comparable), found_preprocessing)
    if difference is not None:
        raise ProvenanceMismatch(store, *difference)


def resume_expectation(provenance: Provenance) -> dict[str, Any]:
    """The fields a rerun into an existing store must share with it to resume rather than start over."""
    return {k: v for k, v in provenance.to_json().items() if k not in RESUME_IGNORED_FIELDS}


def _first_difference(path: str, expected: Any, found: Any) -> tuple[str, Any, Any] | None:
    """The dotted path of the first nested value that differs (e.g. 'preprocessing.views'), or None."""
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in sorted(set(expected) | set(found)):
            difference = _first_difference(f"{path}.{key}", expected.get(key, "<absent>"), found.get(key, "<absent>"))
            if difference is not None:
                return difference
        return None
    return None if expected == found else (path, expected, found)


def _normalise(value: Any) -> Any:
    """Brings enums and mappings to the JSON form the store holds, so comparisons are like for like."""
    if isinstance(value, Modality):
        return value.value
    return json.loads(json.dumps(value, sort_keys=True, default=str))
