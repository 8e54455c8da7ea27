"""Image <-> text retrieval recall@K: the canonical definition, used by training and evaluation alike.

Several images of one study share one report, so the similarity matrix is (images, texts) with
`text_for_image[i]` naming image i's text column. An image query has one correct text. A text
query is a hit when any of its images is in the top K; texts that no image points to are not
queries. Ties count against the query: a wrong candidate scoring the same as the best correct one
ranks ahead of it, so a constant similarity earns nothing and the result never depends on sort
order.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

RECALL_KS: tuple[int, ...] = (1, 5, 10)


class RetrievalDirection(str, enum.Enum):
    """Which modality is the query: an image looks for its text, or a text for its images."""

    IMAGE_TO_TEXT = "image_to_text"
    TEXT_TO_IMAGE = "text_to_image"


@dataclass(frozen=True)
class RetrievalRecall:
    """Recall@K in both directions, keyed by K, and how many queries each direction had."""

    image_to_text: Mapping[int, float]
    text_to_image: Mapping[int, float]
    n_image_queries: int
    n_text_queries: int

    def mean(self, k: int) -> float:
        """The two directions' recall@k averaged: the single number runs are ranked by."""
        return (self.image_to_text[k] + self.text_to_image[k]) / 2

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Flat metric names, e.g. 'val_recall@5' (mean) and 'val_image_to_text_recall@5'."""
        metrics = {f"{prefix}_recall@{k}": self.mean(k) for k in self.image_to_text}
        for direction in RetrievalDirection:
            for k, value in getattr(self, direction.value).items():
                metrics[f"{prefix}_{direction.value}_recall@{k}"] = value
        return metrics


def retrieval_recall(
    similarity: np.ndarray | torch.Tensor, text_for_image: np.ndarray, ks: Sequence[int] = RECALL_KS
) -> RetrievalRecall:
    """Recall@K in both directions from an (n_images, n_texts) similarity matrix; see the module doc."""
    similarity = _checked_similarity(similarity)
    text_for_image = np.asarray(text_for_image, dtype=np.int64)
    n_images, n_texts = similarity.shape
    if text_for_image.shape != (n_images,) or n_images == 0:
        raise ValueError(f"text_for_image must hold one text column per image ({n_images}), "
                         f"got shape {text_for_image.shape}")
    if text_for_image.min() < 0 or text_for_image.max() >= n_texts:
        raise ValueError(f"text_for_image must index the {n_texts} text columns, "
                         f"found {text_for_image.min()}..{text_for_image.max()}")
    if any(k < 1 for k in ks):
        raise ValueError(f"every K must be at least 1, got {list(ks)}")
    image_wrong_above = _image_query_wrong_above(similarity, text_for_image)
    text_wrong_above = _text_query_wrong_above(similarity, text_for_image)
    return RetrievalRecall(
        image_to_text={k: float(np.mean(image_wrong_above < k)) for k in ks},
        text_to_image={k: float(np.mean(text_wrong_above < k)) for k in ks},
        n_image_queries=n_images,
        n_text_queries=len(text_wrong_above),
    )


def _checked_similarity(similarity: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(similarity, torch.Tensor):
        similarity = similarity.detach().float().cpu().numpy()
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be (n_images, n_texts), got shape {similarity.shape}")
    if not np.isfinite(similarity).all():
        raise ValueError("similarity holds NaN or infinite values; check the embeddings")
    return similarity


def _image_query_wrong_above(similarity: np.ndarray, text_for_image: np.ndarray) -> np.ndarray:
    """Per image: how many wrong texts score at least as high as its own text."""
    correct = similarity[np.arange(len(text_for_image)), text_for_image]
    return (similarity >= correct[:, None]).sum(axis=1) - 1


def _text_query_wrong_above(similarity: np.ndarray, text_for_image: np.ndarray) -> np.ndarray:
    """Per text with at least one image: how many other texts' images score at least as high as its best image."""
    n_texts = similarity.shape[1]
    correct = similarity[np.arange(len(text_for_image)), text_for_image]
    best_correct = np.full(n_texts, -np.inf)
    np.maximum.at(best_correct, text_for_image, correct)
    queries = np.isfinite(best_correct)
    at_or_above = (similarity >= best_correct[None, :]).sum(axis=0)
    correct_at_or_above = np.bincount(text_for_image, weights=correct >= best_correct[text_for_image],
                                      minlength=n_texts)
    return (at_or_above - correct_at_or_above)[queries]
