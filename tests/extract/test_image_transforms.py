"""Model inputs from grayscale arrays: resize policies, normalisation, seeded augmented views."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from adaptor_vlp.extract.backbones import ResizePolicy, get_spec
from adaptor_vlp.extract.image_transforms import augmented_view, image_preprocessing, preprocess, view_seed

SPEC = get_spec("tiny-vit")
SIZE = SPEC.image_size


def portrait_with_bright_top_band() -> np.ndarray:
    """A 96 x 64 image whose top 16 rows are white and the rest mid-gray."""
    gray = np.full((96, 64), 128, dtype=np.uint8)
    gray[:16] = 255
    return gray


def textured(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(80, 72), dtype=np.uint8)


def test_preprocess_gives_a_normalised_three_channel_square():
    pixels = preprocess(np.full((70, 90), 255, dtype=np.uint8), SPEC)

    assert pixels.shape == (3, SIZE, SIZE) and pixels.dtype == torch.float32
    expected = (1.0 - torch.tensor(SPEC.mean)) / torch.tensor(SPEC.std)
    torch.testing.assert_close(pixels[:, SIZE // 2, SIZE // 2], expected)


def test_center_crop_drops_the_ends_of_the_long_side_and_squash_keeps_them():
    gray = portrait_with_bright_top_band()
    white = (1.0 - SPEC.mean[0]) / SPEC.std[0]

    cropped = preprocess(gray, SPEC)
    squashed = preprocess(gray, dataclasses.replace(SPEC, resize=ResizePolicy.SQUASH))

    assert cropped[0, 0, SIZE // 2] < white - 0.5
    assert squashed[0, 0, SIZE // 2] == pytest.approx(white, abs=0.05)


def test_preprocess_rejects_non_grayscale_input():
    with pytest.raises(ValueError, match="uint8 \\(H, W\\)"):
        preprocess(np.zeros((8, 8, 3), dtype=np.uint8), SPEC)


def test_augmented_view_is_deterministic_per_seed_and_differs_across_seeds():
    gray = textured(seed=3)

    first = augmented_view(gray, SPEC, seed=11)
    again = augmented_view(gray, SPEC, seed=11)
    other = augmented_view(gray, SPEC, seed=12)

    assert first.shape == (3, SIZE, SIZE) and first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, preprocess(gray, SPEC))


def test_augmented_view_does_not_disturb_the_global_random_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    augmented_view(textured(seed=4), SPEC, seed=5)

    torch.testing.assert_close(torch.rand(3), expected)


def test_view_seed_is_stable_and_distinct_per_sample_and_view():
    assert view_seed("dicom-1", 0) == view_seed("dicom-1", 0)
    seeds = {view_seed(sample, view) for sample in ("dicom-1", "dicom-2") for view in range(3)}
    assert len(seeds) == 6
    assert view_seed("dicom-1", 0) == 7774540624491148243  # pinned: changing it would change cached views


def test_image_preprocessing_record_is_json_and_names_what_changes_embeddings():
    record = image_preprocessing(get_spec("dinov2-s"))

    assert json.loads(json.dumps(record)) == record
    assert record["image_size"] == 224
    assert record["resize"] == ResizePolicy.SHORTER_SIDE_CENTER_CROP.value
    assert record["mean"] == [0.5, 0.5, 0.5] and record["std"] == [0.5, 0.5, 0.5]
    assert "view_augmentation" in record
