"""A trained Adaptor with its frozen backbones, for embedding new radiographs and reports.

    from adaptor_vlp.inference import AdaptorModel

    model = AdaptorModel.from_pretrained("exported-model")          # or a run folder
    images = model.embed_images(["scan.dcm", "folder-of-pngs/"])    # ImageEmbeddings
    texts = model.embed_texts(["No acute cardiopulmonary process."])
    similarity = model.similarity(images.embeddings, texts)          # (images, texts) cosines
    scores = model.zeroshot(["scan.dcm"])                            # CheXpert prompts by default

The backbones load on first use, offline, and are checked against the provenance the Adaptor's
cache recorded (`inference.backbones`). Embeddings are unit-norm float32 in the Adaptor's space.
The live path is the cached one: a cached feature is the backbone's float32 output stored as
float16, whose relative rounding per component is at most 2**-11, so the cached and live feature
vectors agree to cosine >= sqrt(1 - 2**-22) (1 - 1.2e-7) when every component is in float16's normal
range; through the Adaptor the test asks for cosine >= 0.9999 per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.evaluate.zeroshot import DEFAULT_PROMPTS, PromptSet, prompt_scores, read_prompts
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.inference.backbones import LiveBackbone, load_live_backbone
from adaptor_vlp.inference.inputs import DecodedImage, ImageInput, Unreadable, collect_images, decode_images
from adaptor_vlp.inference.record import ModelRecord, read_model
from adaptor_vlp.train.checkpoint import CheckpointKind
from adaptor_vlp.train.encoding import autocast, resolve_device
from adaptor_vlp.train.model import Adaptor, AdaptorInputs

BUILTIN_PROMPTS = {"chexpert": DEFAULT_PROMPTS}
"""Prompt sets known by name: the CheXpert set the evaluate stage uses."""

ImagesDone = Callable[[int], None]
"""Called after each batch of images with the number of inputs it settled (embedded or unreadable)."""


@dataclass(frozen=True)
class ImageEmbeddings:
    """Unit-norm Adaptor-space embeddings (N, P) of the readable inputs, their names, and the inputs left out.

    `inputs` names every input in the order given (folders expanded), readable or not.
    """

    names: tuple[str, ...]
    embeddings: np.ndarray
    unreadable: tuple[Unreadable, ...]
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class ZeroShotScores:
    """A score in [0, 1] per readable image (rows) and class (columns), and the inputs left out."""

    names: tuple[str, ...]
    class_names: tuple[str, ...]
    scores: np.ndarray
    unreadable: tuple[Unreadable, ...]


class AdaptorModel:
    """A trained Adaptor and, loaded on first use, the frozen backbones its cache was built with."""

    def __init__(self, record: ModelRecord, adaptor: Adaptor, device: str = "auto",
                 weights: Mapping[Modality | str, Path] | None = None, registry: Sequence[Path] = (),
                 precision: Precision | None = None) -> None:
        self.record = record
        self.device = resolve_device(device)
        self.adaptor = adaptor.to(self.device).eval()
        self._weights = {Modality(modality): Path(path) for modality, path in (weights or {}).items()}
        self._registry = tuple(Path(path) for path in registry)
        self._precision = precision

    @classmethod
    def from_pretrained(cls, folder: Path | str, device: str = "auto", kind: CheckpointKind = CheckpointKind.BEST,
                        weights: Mapping[Modality | str, Path] | None = None, registry: Sequence[Path] = (),
                        precision: Precision | None = None) -> AdaptorModel:
        """Loads an exported folder (`adaptor export`) or a run folder's `kind` checkpoint.

        `weights` maps "image"/"text" to a backbone's weights file or folder (as `adaptor extract
        --weights`); `registry` adds registry files; `precision` overrides the recorded forward precision.
        """
        record, adaptor = read_model(Path(folder), kind)
        return cls(record, adaptor, device, weights, registry, precision)

    def save_pretrained(self, out: Path | str) -> Path:
        """Writes this model as an exported folder (config.json, model.safetensors, README.md)."""
        from adaptor_vlp.inference.export import write_export

        return write_export(self.record, self.adaptor, Path(out))

    @cached_property
    def image_backbone(self) -> LiveBackbone:
        return self._backbone(Modality.IMAGE)

    @cached_property
    def text_backbone(self) -> LiveBackbone:
        return self._backbone(Modality.TEXT)

    @property
    def logit_scale(self) -> float:
        """The learned temperature's inverse, as the training loss applies it."""
        return float(self.adaptor.clamped_logit_scale().detach().exp())

    def embed_images(self, images: Iterable[ImageInput], batch_size: int = 16,
                     on_batch: ImagesDone | None = None) -> ImageEmbeddings:
        """Adaptor-space embeddings of image files, folders of them, or grayscale arrays; unreadable ones listed."""
        backbone = self.image_backbone
        collected = collect_images(images)
        names, parts, unreadable, batch = [], [], [], []
        settled = 0
        for position, item in enumerate(decode_images(collected, backbone.decode), start=1):
            if isinstance(item, Unreadable):
                unreadable.append(item)
            else:
                batch.append(item)
            settled += 1
            if len(batch) == batch_size or position == len(collected):
                if batch:
                    parts.append(self._encode_images(backbone, batch))
                    names.extend(image.name for image in batch)
                    batch = []
                if on_batch is not None:
                    on_batch(settled)
                settled = 0
        embeddings = np.concatenate(parts) if parts else np.zeros((0, self.adaptor.config.projection_dim), np.float32)
        return ImageEmbeddings(tuple(names), embeddings, tuple(unreadable),
                               tuple(image.name for image in collected))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Adaptor-space embeddings (N, P) of texts, tokenised as the text store recorded."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of texts, not one string")
        backbone = self.text_backbone
        tokens = self.adaptor.config.inputs is AdaptorInputs.TOKENS
        parts = [np.zeros((0, self.adaptor.config.projection_dim), np.float32)]
        for start in range(0, len(texts), batch_size):
            output = backbone.embed_texts(texts[start:start + batch_size], with_tokens=tokens)
            parts.append(self._through_adaptor(self.adaptor.encode_text, output.tokens if tokens else output.pooled,
                                               output.token_mask if tokens else None))
        return np.concatenate(parts)

    @staticmethod
    def similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Cosine similarities (N, M) of two sets of Adaptor-space embeddings."""
        return np.asarray(first, np.float64) @ np.asarray(second, np.float64).T

    def zeroshot(self, images: Iterable[ImageInput], prompts: PromptSet | Path | str | None = None,
                 batch_size: int = 16, on_batch: ImagesDone | None = None) -> ZeroShotScores:
        """Scores each readable image against a prompt set: a PromptSet, a prompts TOML file, a built-in name
        (`chexpert`, the default) - per class the softmax of its positive and negative prompt, as `adaptor
        evaluate zeroshot` scores."""
        prompt_set = resolve_prompts(prompts)
        embedded = self.embed_images(images, batch_size, on_batch)
        prompt_embeddings = self.embed_texts([text for _, text in prompt_set.prompts()])
        if embedded.names:
            scores = prompt_scores(embedded.embeddings, prompt_embeddings, prompt_set.scoring, self.logit_scale)
        else:
            scores = np.zeros((0, len(prompt_set.class_names)))
        return ZeroShotScores(embedded.names, prompt_set.class_names, scores, embedded.unreadable)

    def _backbone(self, modality: Modality) -> LiveBackbone:
        return load_live_backbone(self.record.trained_on(modality), self._weights.get(modality), self._registry,
                                  self.device, self._precision)

    def _encode_images(self, backbone: LiveBackbone, batch: list[DecodedImage]) -> np.ndarray:
        tokens = self.adaptor.config.inputs is AdaptorInputs.TOKENS
        output = backbone.embed_images([image.gray for image in batch], [image.frame for image in batch],
                                       with_tokens=tokens)
        return self._through_adaptor(self.adaptor.encode_image, output.tokens if tokens else output.pooled,
                                     output.token_mask if tokens else None)

    @torch.no_grad()
    def _through_adaptor(self, encode: Callable[..., torch.Tensor], features: torch.Tensor,
                         mask: torch.Tensor | None) -> np.ndarray:
        with autocast(self.device):
            embedded = encode(features.to(self.device), None if mask is None else mask.to(self.device))
        return embedded.float().cpu().numpy()


def resolve_prompts(prompts: PromptSet | Path | str | None) -> PromptSet:
    """A prompt set from a PromptSet, a built-in name (`chexpert`) or a prompts TOML file; None is CheXpert."""
    if isinstance(prompts, PromptSet):
        return prompts
    if prompts is None:
        return read_prompts(DEFAULT_PROMPTS)
    if isinstance(prompts, str) and prompts in BUILTIN_PROMPTS:
        return read_prompts(BUILTIN_PROMPTS[prompts])
    return read_prompts(Path(prompts))
