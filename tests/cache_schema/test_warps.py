"""Segmentation views: the image and its mask are warped by the same seeded ShiftScaleRotate, pixel for pixel."""
import numpy as np
import pytest

from adaptor_vlp.cache_schema.warps import (
    PUBLISHED_SHIFT_SCALE_ROTATE,
    Warp,
    draw_warp,
    view_seed,
    warp_image,
    warp_mask,
)


def pattern(size: int = 48) -> np.ndarray:
    """Rectangles and a diagonal bar off the centre: any rotation or scaling moves them."""
    mask = np.zeros((size, size), dtype=bool)
    mask[5:17, 8:30] = True
    mask[30:44, 33:40] = True
    mask[np.arange(20, 40), np.arange(4, 24)] = True
    return mask


def through_image_path(mask: np.ndarray, warp: Warp) -> np.ndarray:
    """The pattern as a 0/255 grey image, warped by the image's bilinear sampler."""
    return warp_image(mask[None].astype(np.float64) * 255, warp, fill=[0.0])[0]


@pytest.mark.parametrize("sample", ["a", "b", "c", "d", "e", "f"])
def test_the_mask_and_the_image_are_warped_alike_pixel_for_pixel(sample):
    """Where the bilinear image warp is a pure 0 or 255 (its four source pixels agree), the mask warp agrees
    exactly; at the edges the mask takes the nearest source pixel, which the image blends with its neighbour."""
    warp = Warp(applied=True, angle=7.3, scale=1.08) if sample == "a" else draw_warp(view_seed(sample, 1))
    mask = pattern()
    image = through_image_path(mask, warp)
    warped = warp_mask(mask, warp)
    pure = (image == 0) | (image == 255)
    np.testing.assert_array_equal(warped[pure], image[pure] == 255)
    if warp.applied:
        assert not np.array_equal(warped, mask)
        assert pure.mean() > 0.8


def test_the_draws_follow_the_published_ranges_and_probability():
    warps = [draw_warp(view_seed(f"s{index}", 1)) for index in range(400)]
    applied = [warp for warp in warps if warp.applied]
    assert 0.4 < len(applied) / len(warps) < 0.6
    assert all(-10 <= warp.angle <= 10 and 0.9 <= warp.scale <= 1.1 and warp.shift_x == warp.shift_y == 0
               for warp in applied)
    assert draw_warp(view_seed("s0", 1)) == draw_warp(view_seed("s0", 1))
    assert len({draw_warp(view_seed("s0", view)) for view in range(1, 9)}) > 2
    assert PUBLISHED_SHIFT_SCALE_ROTATE.record()["rotate_limit"] == 10.0


def test_a_rotation_by_ninety_degrees_turns_the_pattern_and_fills_nothing_inside():
    mask = pattern()
    turned = warp_mask(mask, Warp(applied=True, angle=90.0))
    np.testing.assert_array_equal(turned, np.rot90(mask))
    image = warp_image(mask[None].astype(np.float32), Warp(applied=True, angle=90.0), fill=[-1.0])[0]
    np.testing.assert_allclose(image, np.rot90(mask).astype(np.float32), atol=1e-5)


def test_a_shrink_fills_the_border_with_the_fill_value():
    image = np.ones((2, 20, 20), dtype=np.float32)
    shrunk = warp_image(image, Warp(applied=True, scale=0.5), fill=[-1.0, -2.0])
    assert shrunk[0, 0, 0] == -1.0 and shrunk[1, 0, 0] == -2.0 and shrunk[0, 10, 10] == 1.0
    assert not warp_mask(np.ones((20, 20), dtype=bool), Warp(applied=True, scale=0.5))[0, 0]
