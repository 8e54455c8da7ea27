"""The recorded image geometry, applied to masks as extraction applied it to images."""
import numpy as np

from adaptor_vlp.cache_schema.geometry import (
    centre_square,
    centre_window,
    mask_through_geometry,
    resized_shape,
    square_padding,
)


def test_sizes_and_windows_follow_the_libraries_rules():
    assert resized_shape("resize_shortest", 224, 300, 200) == (336, 224)  # torchvision: int(224 * 300 / 200)
    assert resized_shape("resize_longest", 256, 1955, 1841) == (256, 241)  # MGCA: int(1841 * (256 / 1955))
    assert resized_shape("resize", 64, 300, 200) == (64, 64)
    assert square_padding(256, 241) == (0, 0, 7, 8)
    assert centre_square(5, 8) == (0, 2, 5)  # torchxrayvision: x // 2 - side // 2
    assert centre_window(256, 256, 224) == (16, 16)


def test_a_mask_follows_crop_square_and_a_window_larger_than_itself():
    mask = np.zeros((4, 6), dtype=bool)
    mask[:, 1] = True

    cropped = mask_through_geometry(mask, [{"op": "crop_square"}])
    assert cropped.shape == (4, 4) and cropped[:, 0].all() and cropped.sum() == 4  # centre square: columns 1..4
    framed = mask_through_geometry(mask, [{"op": "center_crop", "size": 8}])
    assert framed.shape == (8, 8) and framed[2:6, 2].all() and framed.sum() == 4
