"""The published loss equals MGCA's MixedLoss with the original Dice, copied here from segmentation_loss.py."""
import pytest
import torch
import torch.nn.functional as F

from adaptor_vlp.evaluate.segmentation_loss import dice_bce_loss, loss_function, published_mixed_loss
from adaptor_vlp.evaluate.segmentation_protocol import LossName


def mgca_dice_loss(pred, target):
    smooth = 1.0
    pred = torch.sigmoid(pred)
    p_flat = pred.view(-1)
    t_flat = target.view(-1)
    intersection = (p_flat * t_flat).sum()
    return (2.0 * intersection + smooth) / (p_flat.sum() + t_flat.sum() + smooth)


def mgca_focal_loss(input, target, gamma=2.0):
    max_val = (-input).clamp(min=0)
    loss = input - input * target + max_val + ((-max_val).exp() + (-input - max_val).exp()).log()
    invprobs = F.logsigmoid(-input * (target * 2.0 - 1.0))
    loss = (invprobs * gamma).exp() * loss
    return loss.mean()


def mgca_mixed_loss(input, target, alpha=10.0):
    """MixedLoss(alpha=10, gamma=2, modified_dice_loss=False).forward."""
    loss = alpha * mgca_focal_loss(input, target) + (-torch.log(mgca_dice_loss(input, target)))
    return loss.mean()


@pytest.mark.parametrize("empty", [False, True])
def test_the_published_loss_equals_mgcas_mixed_loss(empty):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 16, 16, generator=generator, dtype=torch.float64) * 3
    masks = torch.rand(4, 16, 16, generator=generator, dtype=torch.float64) > 0.7
    if empty:
        masks[:] = False
    expected = mgca_mixed_loss(logits, masks.to(torch.float64))
    torch.testing.assert_close(published_mixed_loss(logits, masks), expected, rtol=1e-12, atol=1e-12)
    assert loss_function(LossName.PUBLISHED_MIXED) is published_mixed_loss


def test_the_dice_term_pools_the_batch_rather_than_averaging_images():
    """One image predicted perfectly, one empty mask predicted full: per-image Dice would average, batch Dice pools."""
    logits = torch.full((2, 4, 4), -20.0)
    masks = torch.zeros(2, 4, 4)
    masks[0, :2] = 1
    logits[0, :2] = 20.0
    logits[1] = 20.0
    batch_dice = (2 * 8 + 1) / (8 + 16 + 1 + 8)
    focal = mgca_focal_loss(logits, masks)
    torch.testing.assert_close(published_mixed_loss(logits, masks), 10 * focal - torch.log(torch.tensor(batch_dice)))


def test_the_gradient_flows_and_a_better_prediction_has_a_lower_loss():
    masks = torch.zeros(2, 8, 8)
    masks[:, 2:5, 2:5] = 1
    good = (masks * 8 - 4).requires_grad_()
    loss = published_mixed_loss(good, masks)
    loss.backward()
    assert good.grad is not None and good.grad.abs().sum() > 0
    assert float(loss) < float(published_mixed_loss(torch.zeros(2, 8, 8), masks))
    assert float(dice_bce_loss(good.detach(), masks)) < float(dice_bce_loss(torch.zeros(2, 8, 8), masks))
