"""The frozen backbones of a trained Adaptor, loaded live and checked against what its cache recorded.

A store's provenance names its backbone, the weights' identifier and SHA-256, and every
preprocessing and tokenizer setting that shapes an embedding. `load_live_backbone` resolves the
backbone through the same registry lookup as `adaptor extract` (built-in files,
$ADAPTOR_REGISTRY, the caller's registry files), finds its weights through the same offline
lookup (`extract.weights`: a given path, a package, the local Hugging Face cache,
torchxrayvision's cache folder), and refuses it when the weights it loaded hash differently or
when the resolved entry would preprocess differently from what the store recorded. Images are
then decoded at the decode size the store recorded and preprocessed by the same
`extract.image_transforms.preprocess_each` extraction ran (reports through the same
`extract.text_cleaning`), in the forward precision it recorded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from adaptor_vlp.cache_schema import Modality, Provenance, ProvenanceMismatch
from adaptor_vlp.cache_schema.provenance import check_same_embedding_space
from adaptor_vlp.extract.backbones import BackboneSpec, UnknownBackbone, get_spec
from adaptor_vlp.extract.encoders import EncoderOutput, ImageEncoder, TextEncoder, load_image_encoder, load_text_encoder
from adaptor_vlp.extract.image_transforms import DecodeSize, decode_size, preprocess_each
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.text_cleaning import clean_text


class BackboneMismatch(ValueError):
    """The backbone found here is not the one the Adaptor's cache was built with: other weights or settings."""


@dataclass(frozen=True)
class LiveBackbone:
    """A frozen backbone ready to embed new inputs exactly as extraction embedded the cache's.

    `decode` is the decode size images are read at (image backbones only); `recorded` the
    provenance of the store the Adaptor was trained on.
    """

    spec: BackboneSpec
    encoder: ImageEncoder | TextEncoder
    decode: DecodeSize | None
    recorded: Mapping[str, Any]

    @property
    def modality(self) -> Modality:
        return self.spec.modality

    def embed_images(self, grays: Sequence[np.ndarray], frames: Sequence[tuple[int, int] | None] | None = None,
                     with_tokens: bool = False) -> EncoderOutput:
        """Backbone features of decoded uint8 (H, W) images: the recorded preprocessing, then the frozen forward.

        `frames`: each image's full-resolution (height, width) where it was decoded at a reduced
        size (`extract.images.read_decoded`), so the first resize takes the shape extraction gave it.
        """
        if not isinstance(self.encoder, ImageEncoder):
            raise TypeError(f"backbone {self.spec.name!r} is a text backbone")
        frames = frames if frames is not None else [None] * len(grays)
        pixels = torch.stack([preprocess_each(gray, [self.spec], frame=frame)[0]
                              for gray, frame in zip(grays, frames, strict=True)])
        return self.encoder.encode(pixels, with_tokens=with_tokens)

    def embed_texts(self, texts: Sequence[str], with_tokens: bool = False) -> EncoderOutput:
        """Backbone features of texts: the recorded tokenizer settings, then the frozen forward."""
        if not isinstance(self.encoder, TextEncoder):
            raise TypeError(f"backbone {self.spec.name!r} is an image backbone")
        return self.encoder.encode([self._cleaned(position, text) for position, text in enumerate(texts)],
                                   with_tokens=with_tokens)

    def _cleaned(self, position: int, text: str) -> str:
        """The text through the entry's cleaning (`extract.text_cleaning`), as extraction fed its reports."""
        cleaned = clean_text(text, self.spec.text_cleaning)
        if not cleaned.usable:
            raise ValueError(f"text {position} cannot be embedded by {self.spec.name!r}: {cleaned.issue}")
        return cleaned.text


def load_live_backbone(recorded: Mapping[str, Any], weights: Path | None = None, registry: Sequence[Path] = (),
                       device: str | torch.device = "cpu", precision: Precision | None = None) -> LiveBackbone:
    """The backbone a store's provenance (`recorded`, JSON) names, loaded offline and checked against it.

    `weights` overrides where the weights are looked up (as `adaptor extract --weights`);
    `precision` the forward arithmetic (default: what the store recorded). Raises BackboneMismatch
    naming both SHA-256s when the weights differ, or the setting that differs; the extract
    stage's MissingWeights says how to provide weights that are not on this machine.
    """
    modality = Modality(recorded["modality"])
    name = recorded["backbone"]
    preprocessing = recorded["preprocessing"]
    try:
        spec = get_spec(name, tuple(registry), modality, preprocessing.get("max_length"))
    except UnknownBackbone as error:
        raise BackboneMismatch(f"{error}; the Adaptor was trained on backbone {name!r}: pass the registry file that "
                               "defines it (--registry, or ADAPTOR_REGISTRY)") from None
    forward = precision or Precision(preprocessing.get("forward_precision", Precision.AUTO.value))
    loader = load_image_encoder if modality is Modality.IMAGE else load_text_encoder
    encoder = loader(spec, weights=weights, device=device, precision=forward)
    if encoder.weights_sha256 != recorded["weights_sha256"]:
        raise BackboneMismatch(
            f"backbone {name!r}: the weights loaded here ({encoder.weights_id}) have SHA-256 {encoder.weights_sha256}, "
            f"but the Adaptor's {modality.value} store was built from weights with SHA-256 "
            f"{recorded['weights_sha256']}; supply the weights the cache was built with (--weights)"
        )
    _check_same_settings(spec, encoder, recorded)
    decode = None
    if modality is Modality.IMAGE:
        recorded_decode = preprocessing.get("decode_size")
        decode = DecodeSize(decode_size(spec)) if recorded_decode is None else DecodeSize.parse(str(recorded_decode))
    return LiveBackbone(spec, encoder, decode, recorded)


def _check_same_settings(spec: BackboneSpec, encoder: ImageEncoder | TextEncoder, recorded: Mapping[str, Any]) -> None:
    """Refuses a registry entry that now embeds differently from the recorded one (preprocessing, pooling, ids)."""
    live = Provenance(dataset=recorded["dataset"], manifest_sha256=recorded["manifest_sha256"],
                      modality=spec.modality, backbone=spec.name, weights_id=encoder.weights_id,
                      weights_sha256=encoder.weights_sha256, preprocessing=encoder.preprocessing,
                      pooling=spec.pooling.value)
    try:
        check_same_embedding_space(f"backbone {spec.name!r}", live, recorded)
    except ProvenanceMismatch as error:
        raise BackboneMismatch(
            f"backbone {spec.name!r} as resolved here differs from the one the cache recorded in "
            f"'{error.field_name}': recorded {error.expected!r}, here {error.found!r}; use the registry entry the "
            "cache was built with"
        ) from None
