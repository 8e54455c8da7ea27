"""The contrastive loss against values worked out by hand."""
import math

import pytest
import torch

from adaptor_vlp.train.loss import ContrastiveLoss, contrastive_loss

# Two pairs. Image 0 = (1, 0), image 1 = (0, 1); text 0 = (1, 0), text 1 = (0.6, 0.8); scale exp(s) = 2.
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TEXTS = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
LOG_SCALE = torch.tensor(math.log(2.0))
# logits = 2 * texts @ images.T: row 0 (text 0) = (2.0, 0.0), row 1 (text 1) = (1.2, 1.6).
# For each text, over the images (rows):
IMAGE_LOSS = (-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0)))
              - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))) / 2
# For each image, over the texts (columns): image 0 sees (2.0, 1.2), image 1 sees (0.0, 1.6).
TEXT_LOSS = (-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))
             - math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))) / 2


def test_loss_matches_hand_computed_values() -> None:
    result = contrastive_loss(IMAGES, TEXTS, LOG_SCALE, image_weight=0.75)

    assert result.image_loss.item() == pytest.approx(IMAGE_LOSS, rel=1e-6)
    assert result.text_loss.item() == pytest.approx(TEXT_LOSS, rel=1e-6)
    assert result.loss.item() == pytest.approx(0.75 * IMAGE_LOSS + 0.25 * TEXT_LOSS, rel=1e-6)


@pytest.mark.parametrize(("image_weight", "expected"), [(1.0, IMAGE_LOSS), (0.0, TEXT_LOSS)])
def test_image_weight_extremes_keep_one_direction(image_weight: float, expected: float) -> None:
    assert IMAGE_LOSS != pytest.approx(TEXT_LOSS)

    result = contrastive_loss(IMAGES, TEXTS, LOG_SCALE, image_weight=image_weight)

    assert result.loss.item() == pytest.approx(expected, rel=1e-6)


def test_module_applies_its_image_weight() -> None:
    result = ContrastiveLoss(image_weight=0.3)(IMAGES, TEXTS, LOG_SCALE)

    assert result.loss.item() == pytest.approx(0.3 * IMAGE_LOSS + 0.7 * TEXT_LOSS, rel=1e-6)


def test_gradient_reaches_embeddings_and_logit_scale() -> None:
    images = IMAGES.clone().requires_grad_(True)
    log_scale = LOG_SCALE.clone().requires_grad_(True)

    contrastive_loss(images, TEXTS, log_scale).loss.backward()

    assert images.grad is not None and images.grad.abs().sum() > 0
    assert log_scale.grad is not None and log_scale.grad.item() != 0.0


@pytest.mark.parametrize("image_weight", [-0.1, 1.5])
def test_rejects_image_weight_outside_unit_interval(image_weight: float) -> None:
    with pytest.raises(ValueError, match="image_weight"):
        ContrastiveLoss(image_weight=image_weight)
    with pytest.raises(ValueError, match="image_weight"):
        contrastive_loss(IMAGES, TEXTS, LOG_SCALE, image_weight=image_weight)


def test_rejects_unpaired_batches() -> None:
    with pytest.raises(ValueError, match="pair"):
        contrastive_loss(IMAGES, TEXTS[:1], LOG_SCALE)
