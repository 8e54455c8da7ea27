"""Recall@K with several images per text, ties against the query, and chance on random similarities."""
import numpy as np
import pytest
import torch

from adaptor_vlp.train.retrieval import RECALL_KS, retrieval_recall

# Three images, two texts: images 0 and 1 belong to text 0, image 2 to text 1.
TEXT_FOR_IMAGE = np.array([0, 0, 1])
SIMILARITY = np.array([
    [0.9, 0.1],   # image 0: its text ranks first
    [0.2, 0.8],   # image 1: its text ranks second
    [0.7, 0.3],   # image 2: its text ranks second
])


def test_hand_worked_example_in_both_directions() -> None:
    recall = retrieval_recall(SIMILARITY, TEXT_FOR_IMAGE, ks=(1, 2))

    assert recall.image_to_text == {1: pytest.approx(1 / 3), 2: 1.0}
    # Text 0: best image (0.9) is first. Text 1: image 1 (0.8, wrong) beats image 2 (0.3): rank 2.
    assert recall.text_to_image == {1: 0.5, 2: 1.0}
    assert (recall.n_image_queries, recall.n_text_queries) == (3, 2)
    assert recall.mean(1) == pytest.approx((1 / 3 + 0.5) / 2)


def test_ties_count_against_the_query_so_constant_similarity_earns_nothing() -> None:
    recall = retrieval_recall(np.zeros((4, 4)), np.arange(4), ks=(1, 3))

    assert recall.image_to_text == {1: 0.0, 3: 0.0} and recall.text_to_image == {1: 0.0, 3: 0.0}


def test_texts_without_images_are_candidates_but_not_queries() -> None:
    similarity = np.array([[0.5, 0.9, 0.1]])  # one image of text 0; text 1 has no image and outranks it

    recall = retrieval_recall(similarity, np.array([0]), ks=(1, 2))

    assert recall.n_text_queries == 1
    assert recall.image_to_text == {1: 0.0, 2: 1.0}
    assert recall.text_to_image == {1: 1.0, 2: 1.0}


def test_random_similarity_scores_near_chance() -> None:
    n = 400
    similarity = torch.randn(n, n, generator=torch.Generator().manual_seed(0))

    recall = retrieval_recall(similarity, np.arange(n))

    for k in RECALL_KS:  # chance is k / n; 400 queries put 4 standard errors within 0.06
        assert recall.image_to_text[k] == pytest.approx(k / n, abs=0.06)
        assert recall.text_to_image[k] == pytest.approx(k / n, abs=0.06)


def test_metric_names_are_flat_and_named_by_direction() -> None:
    metrics = retrieval_recall(SIMILARITY, TEXT_FOR_IMAGE, ks=(1,)).as_metrics("val")

    assert set(metrics) == {"val_recall@1", "val_image_to_text_recall@1", "val_text_to_image_recall@1"}


@pytest.mark.parametrize(
    ("similarity", "text_for_image", "message"),
    [
        (np.full((2, 2), np.nan), np.array([0, 1]), "NaN"),
        (np.zeros((2, 2)), np.array([0, 2]), "index the 2 text columns"),
        (np.zeros((2, 2)), np.array([0]), "one text column per image"),
    ],
)
def test_malformed_inputs_are_refused(similarity: np.ndarray, text_for_image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_recall(similarity, text_for_image)
