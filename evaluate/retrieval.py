"""Image <-> text retrieval through a trained Adaptor on a held-out split: recall@1/5/10 with bootstrap intervals.

Protocol: one image per study (the lowest image id), so that both directions have exactly one
correct candidate and each query is one study. The gallery is the whole split; intervals
resample the queries by patient while the gallery stays fixed, and each query's hit is computed
by the canonical `train.retrieval.retrieval_recall` on that query alone, so the point values are
exactly its recall. Raw backbone features cannot be compared (image and text live in different
spaces), so only the Adaptor is measured, beside the chance level K / N.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.evaluate.bootstrap import bootstrap_ci
from adaptor_vlp.evaluate.features import AdaptorRun, adaptor_embeddings, open_dataset_rows, open_store_for
from adaptor_vlp.evaluate.results import EvaluatedRun, EvaluationTask, FeatureSpace, ResultRecord, RunContext
from adaptor_vlp.train.pairs import PairingError, pair_stores
from adaptor_vlp.train.retrieval import RECALL_KS, RetrievalDirection, retrieval_recall

PROTOCOL = "one image per study (lowest image id); gallery: every study of the split"


@dataclass(frozen=True)
class RetrievalSettings:
    """The held-out split, the Ks, and the seed and resample count of the bootstrap.

    The headline metric is the mean of both directions' recall at the middle K (recall@5 by default),
    the number training selects its best epoch by.
    """

    split: str = "test"
    ks: Sequence[int] = RECALL_KS
    seed: int = 0
    n_resamples: int = 1000


def run_retrieval(cache_dir: Path, dataset: str, run: AdaptorRun, settings: RetrievalSettings,
                  device: str = "cpu") -> EvaluatedRun:
    """Recall@K in both directions (and their mean) of the dataset's image and text stores through the Adaptor."""
    vision = run.trained_on(Modality.IMAGE)["backbone"]
    text = run.trained_on(Modality.TEXT)["backbone"]
    rows = open_dataset_rows(cache_dir, dataset, vision, run)
    pairing = pair_stores(rows.store, open_store_for(cache_dir, dataset, Modality.TEXT, text, run))
    pairs = pairing.splits.get(settings.split)
    if pairs is None or len(pairs) < 2:
        count = 0 if pairs is None else len(pairs)
        raise PairingError(f"{rows.store.path} and {pairing.text_store.path} share {count} '{settings.split}' pairs; "
                           "retrieval needs at least 2")
    image_ids = pairing.image_store.ids[pairs.image_rows]
    order = np.lexsort((image_ids, pairs.text_rows))
    first = order[np.r_[True, np.diff(pairs.text_rows[order]) != 0]]
    image_rows, text_rows = pairs.image_rows[first], pairs.text_rows[first]
    subject_of_row = dict(zip(rows.rows, rows.subjects))
    subjects = np.array([subject_of_row[row] for row in image_rows])

    images = adaptor_embeddings(pairing.image_store, image_rows, run, device)
    texts = adaptor_embeddings(pairing.text_store, text_rows, run, device)
    similarity = images.astype(np.float64) @ texts.astype(np.float64).T
    hits = {RetrievalDirection.IMAGE_TO_TEXT: _query_hits(similarity, settings.ks),
            RetrievalDirection.TEXT_TO_IMAGE: _query_hits(similarity.T, settings.ks)}
    metrics = {}
    for k in settings.ks:
        for direction, direction_hits in hits.items():
            metrics[f"{direction.value}_recall@{k}"] = bootstrap_ci(
                np.mean, direction_hits[k], n_resamples=settings.n_resamples, seed=settings.seed, groups=subjects)
        metrics[f"mean_recall@{k}"] = bootstrap_ci(
            _mean_of_both, hits[RetrievalDirection.IMAGE_TO_TEXT][k], hits[RetrievalDirection.TEXT_TO_IMAGE][k],
            n_resamples=settings.n_resamples, seed=settings.seed, groups=subjects)
    n_queries = len(image_rows)
    details = {
        "protocol": PROTOCOL,
        "n_queries": n_queries,
        "chance": {f"recall@{k}": min(1.0, k / n_queries) for k in settings.ks},
        "images_beyond_first_per_study": int(len(pairs) - n_queries),
        "pairs_left_out": dict(pairing.left_out),
        "rows_dropped": dict(rows.dropped),
    }
    context = RunContext(dataset, pairing.provenance(), run.reference())
    record = ResultRecord(task=EvaluationTask.RETRIEVAL, context=context, feature_space=FeatureSpace.ADAPTOR,
                          method="cosine", split=settings.split, data_pct=None, subset=None, seed=settings.seed,
                          headline=f"mean_recall@{sorted(settings.ks)[len(settings.ks) // 2]}", metrics=metrics,
                          details=details)
    arrays = {"image_ids": pairing.image_store.ids[image_rows], "study_ids": pairing.text_store.ids[text_rows]}
    return EvaluatedRun(record, arrays)


def _query_hits(similarity: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Per query (row), whether its own column (the diagonal) is within the top K, for each K."""
    hits = {k: np.zeros(len(similarity)) for k in ks}
    for query in range(len(similarity)):
        recall = retrieval_recall(similarity[[query]], np.array([query]), ks).image_to_text
        for k in ks:
            hits[k][query] = recall[k]
    return hits


def _mean_of_both(image_to_text: np.ndarray, text_to_image: np.ndarray) -> float:
    return float((image_to_text.mean() + text_to_image.mean()) / 2)
