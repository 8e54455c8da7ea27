"""The token decoder learns masks that a token channel marks, from float16 tokens, seeded."""
import numpy as np
import pytest

from adaptor_vlp.evaluate.metrics import segmentation_report
from adaptor_vlp.evaluate.segmentation_head import DecoderSettings, fit_segmentation_head

GRID = 8
CELL_PIXELS = 4
OUT_SIZE = GRID * CELL_PIXELS
N_FEATURES = 8
SMALL_DECODER = DecoderSettings(hidden_channels=32)


def _marked_rectangles(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tokens whose first channel is 1 on the cells of a random rectangle (empty for a quarter
    of the images) under noise, and the rectangle's pixel mask."""
    cells = np.zeros((n, GRID, GRID), dtype=bool)
    for image in range(n):
        if rng.random() < 0.25:
            continue
        top, left = rng.integers(0, GRID - 2, size=2)
        height, width = rng.integers(2, 5, size=2)
        cells[image, top : top + height, left : left + width] = True
    tokens = rng.normal(scale=0.3, size=(n, GRID * GRID, N_FEATURES))
    tokens[:, :, 0] += cells.reshape(n, -1)
    masks = cells.repeat(CELL_PIXELS, axis=1).repeat(CELL_PIXELS, axis=2)
    return tokens.astype(np.float16), masks


@pytest.fixture(scope="module")
def task() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    sizes = {"train": 96, "val": 32, "test": 48}
    return {split: _marked_rectangles(size, rng) for split, size in sizes.items()}


def test_decoder_learns_marked_cells_to_a_dice_above_point_seven(task):
    segmenter = fit_segmentation_head(
        *task["train"], *task["val"], grid=GRID, out_size=OUT_SIZE, seed=0, epochs=20,
        settings=SMALL_DECODER,
    )
    test_tokens, test_masks = task["test"]
    predicted = segmenter.predict_masks(test_tokens)
    report = segmentation_report(predicted, test_masks)
    assert predicted.shape == test_masks.shape and predicted.dtype == bool
    assert report.dice_positive > 0.7
    assert report.empty_gt_false_positive_rate < 0.5


def test_decoder_learns_nothing_from_tokens_unrelated_to_the_masks(task):
    train_tokens, train_masks = task["train"]
    shuffled = train_tokens[np.random.default_rng(1).permutation(len(train_tokens))]
    segmenter = fit_segmentation_head(
        shuffled, train_masks, *task["val"], grid=GRID, out_size=OUT_SIZE, seed=0, epochs=10,
        settings=SMALL_DECODER,
    )
    report = segmentation_report(segmenter.predict_masks(task["test"][0]), task["test"][1])
    assert report.dice_positive < 0.6


def test_same_seed_gives_the_same_masks(task):
    runs = [
        fit_segmentation_head(
            *task["train"], *task["val"], grid=GRID, out_size=OUT_SIZE, seed=5, epochs=2,
            settings=SMALL_DECODER,
        )
        for _ in range(2)
    ]
    first, again = (run.predict_probabilities(task["test"][0]) for run in runs)
    np.testing.assert_array_equal(first, again)


def test_tokens_that_do_not_fill_the_grid_are_refused(task):
    train_tokens, train_masks = task["train"]
    with_class_token = np.concatenate([train_tokens[:, :1], train_tokens], axis=1)
    with pytest.raises(ValueError, match="class or register tokens"):
        fit_segmentation_head(with_class_token, train_masks, *task["val"], grid=GRID, out_size=OUT_SIZE)


def test_masks_of_another_size_are_refused(task):
    with pytest.raises(ValueError, match="train_masks"):
        fit_segmentation_head(*task["train"], *task["val"], grid=GRID, out_size=OUT_SIZE * 2)
