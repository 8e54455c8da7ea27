"""Retrieval through a trained Adaptor beats chance, uses one image per study, and agrees with the canonical recall."""
import numpy as np
import pytest

from adaptor_vlp.cache_schema import CacheStore, Modality, store_path
from adaptor_vlp.evaluate.features import adaptor_embeddings, open_adaptor_run
from adaptor_vlp.evaluate.retrieval import RetrievalSettings, run_retrieval
from adaptor_vlp.train.pairs import PairingError
from adaptor_vlp.train.retrieval import retrieval_recall
from tests.evaluate.conftest import DATASET, TEXT

CHANCE_MARGIN = 0.3
"""Mean recall@5 on the toy test split must exceed chance (5 / studies) by this much."""


@pytest.fixture(scope="module")
def retrieved(toy, toy_run):
    run = open_adaptor_run(toy_run)
    return run, run_retrieval(toy.cache_dir, DATASET, run, RetrievalSettings(n_resamples=50, seed=1))


def test_a_trained_adaptor_retrieves_far_above_chance(retrieved):
    _, result = retrieved
    record = result.record
    chance = record.details["chance"]["recall@5"]
    assert record.metrics["mean_recall@5"].point >= chance + CHANCE_MARGIN
    assert record.headline == "mean_recall@5"
    for k in (1, 5, 10):
        for prefix in ("image_to_text", "text_to_image", "mean"):
            interval = record.metrics[f"{prefix}_recall@{k}"]
            assert interval.low <= interval.point <= interval.high


def test_each_study_is_one_query_with_its_lowest_image(toy, retrieved):
    _, result = retrieved
    unreadable = set(toy.image_store.ids[~toy.image_store.valid])
    readable = [row for row in toy.manifest.rows if row.split.value == "test" and row.dicom_id not in unreadable]
    lowest = {}
    for row in sorted(readable, key=lambda row: row.dicom_id, reverse=True):
        lowest[row.study_id] = row.dicom_id
    image_ids, study_ids = result.arrays["image_ids"], result.arrays["study_ids"]
    assert sorted(study_ids) == sorted(lowest) and len(study_ids) == result.record.details["n_queries"]
    assert all(lowest[study] == image for study, image in zip(study_ids, image_ids))
    assert result.record.details["chance"]["recall@1"] == pytest.approx(1 / len(study_ids))


def test_point_values_equal_the_canonical_recall_on_the_same_pairs(toy, retrieved):
    run, result = retrieved
    image_store = toy.image_store
    text_store = CacheStore.open(store_path(toy.cache_dir, toy.dataset, Modality.TEXT, TEXT))
    images = adaptor_embeddings(image_store, image_store.rows_for_ids(list(result.arrays["image_ids"])), run)
    texts = adaptor_embeddings(text_store, text_store.rows_for_ids(list(result.arrays["study_ids"])), run)
    canonical = retrieval_recall(images.astype(np.float64) @ texts.astype(np.float64).T, np.arange(len(images)))
    for k in (1, 5, 10):
        assert result.record.metrics[f"image_to_text_recall@{k}"].point == pytest.approx(canonical.image_to_text[k])
        assert result.record.metrics[f"text_to_image_recall@{k}"].point == pytest.approx(canonical.text_to_image[k])


def test_a_split_without_pairs_is_refused(toy, retrieved):
    run, _ = retrieved
    with pytest.raises(PairingError, match="'holdout' pairs"):
        run_retrieval(toy.cache_dir, DATASET, run, RetrievalSettings(split="holdout", n_resamples=5))
