"""Target strings: SIIM's relative column-major run-lengths (checked on every real RLE), boxes, resampling, errors."""
import numpy as np
import pytest

from adaptor_vlp.cache_schema.targets import (
    Box,
    TargetError,
    TargetKind,
    decode_mask,
    decode_siim_rle,
    encode_boxes_target,
    encode_rle_target,
    encode_siim_rle,
    parse_target_header,
)
from tests.extract.datasets.conftest import real_rows


def test_runs_go_down_columns_with_starts_relative_to_the_previous_run_end():
    # Column-major pixel numbers of a 4x3 mask: column 0 is 0..3, column 1 is 4..7, column 2 is 8..11.
    mask = decode_mask("rle:4x3:1 2 2 2 3 1")  # pixels 1-2 (end 3), then 3+2 = 5-6 (end 7), then 7+3 = 10
    expected = np.zeros((4, 3), dtype=bool)
    expected[1:3, 0] = True
    expected[1:3, 1] = True
    expected[2, 2] = True
    assert np.array_equal(mask, expected)
    assert encode_rle_target(expected) == "rle:4x3:1 2 2 2 3 1"


def test_siim_cells_and_rle_targets_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (5, 7), (64, 48)):
        mask = rng.random(shape) < 0.3
        assert np.array_equal(decode_mask(encode_rle_target(mask)), mask)
        assert np.array_equal(decode_siim_rle(encode_siim_rle(mask), *shape), mask)
    assert encode_siim_rle(np.zeros((3, 3), dtype=bool)) == "-1"
    assert encode_rle_target(np.zeros((3, 2), dtype=bool)) == "rle:3x2:"
    assert not decode_siim_rle(" -1", 3, 3).any()
    assert not decode_mask("rle:3x2:").any() and decode_mask("rle:3x2:").shape == (3, 2)


@pytest.mark.slow
def test_every_real_siim_rle_decodes_to_a_plausible_pneumothorax():
    """The relative, column-major reading is right: all 12,954 cells fit 1024x1024, re-encode identically,
    and the masks lie where a pneumothorax does: in the upper chest, off the midline."""
    rows = real_rows("siim-pneumothorax-train-rle.csv.gz")
    assert [name.strip() for name in rows[0]] == ["ImageId", "EncodedPixels"]
    areas, centres = [], []
    for _, encoded in rows[1:]:
        mask = decode_siim_rle(encoded, 1024, 1024)
        if encoded.strip() == "-1":
            continue
        pixels = np.flatnonzero(mask)
        areas.append(len(pixels))
        centres.append((np.mean(pixels // 1024), np.mean(pixels % 1024)))
        assert encode_siim_rle(mask) == " ".join(encoded.split())
    areas, centres = np.array(areas), np.array(centres)
    assert len(areas) > 3000
    assert 20 < areas.min() and np.median(areas) < 0.02 * 1024**2 and areas.max() < 0.25 * 1024**2
    assert np.median(centres[:, 0]) < 0.35 * 1024  # apical: rows near the top
    assert np.mean(np.abs(centres[:, 1] - 512) > 0.1 * 1024) > 0.7  # lateral: columns away from the midline


def test_boxes_cover_the_pixels_whose_centres_they_contain():
    target = encode_boxes_target([Box(1, 0, 2, 2), Box(2.6, 3.4, 1.0, 0.2)], height=5, width=4)
    assert target == "boxes:5x4:1,0,2,2;2.6,3.4,1,0.2"
    expected = np.zeros((5, 4), dtype=bool)
    expected[0:2, 1:3] = True
    expected[3, 3] = True  # centre (3.5, 3.5) lies in x 2.6..3.6, y 3.4..3.6
    assert np.array_equal(decode_mask(target), expected)
    assert not decode_mask(encode_boxes_target([], height=5, width=4)).any()
    assert decode_mask("boxes:4x4:-2,-2,3,3;3,3,9,9").sum() == 1 + 1  # clipped to the image


def test_resampling_takes_the_pixel_under_each_output_centre():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, 4:] = True
    resized = decode_mask(encode_rle_target(mask), out_size=(2, 2))
    assert np.array_equal(resized, [[False, True], [False, False]])
    assert decode_mask("boxes:1024x1024:0,0,512,1024", out_size=(16, 16))[:, :8].all()
    assert decode_mask("boxes:1024x1024:0,0,512,1024", out_size=(16, 16)).sum() == 128
    assert decode_mask("rle:2x2:0 4", out_size=(5, 3)).shape == (5, 3)


def test_header_is_parsed_without_decoding():
    assert parse_target_header("boxes:1024x768:") == parse_target_header("boxes:1024x768:1,2,3,4")
    header = parse_target_header("rle:1024x768:5 6")
    assert (header.kind, header.height, header.width) == (TargetKind.RLE, 1024, 768)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", r"target '' is not of the form"),
        ("mask:4x4:", r"unknown kind 'mask'"),
        ("rle:0x4:", r"declares an empty 0x4 mask"),
        ("rle:4x4:1 2 3", r"'rle:4x4:1 2 3': 3 numbers, expected \(gap, length\) pairs"),
        ("rle:4x4:1 x", r"run-lengths must be whole numbers"),
        ("rle:4x4:-1 2", r"negative gap or length"),
        ("rle:4x4:10 3 5 2", r"runs end at pixel 20, beyond the 4x4 mask \(absolute rather than relative"),
        ("boxes:4x4:1,2,3", r"box '1,2,3' is not four numbers"),
        ("boxes:4x4:1,2,-3,4", r"non-negative width and height"),
        ("rle:1024x1024:" + "1 1 " * 100 + "1", r"'rle:1024x1024:1 1 1 1 .*\.\.\.': 201 numbers"),
    ],
)
def test_bad_targets_are_named_in_the_error(target, message):
    with pytest.raises(TargetError, match=message):
        decode_mask(target)


def test_bad_resampling_sizes_and_masks_are_refused():
    with pytest.raises(TargetError, match=r"cannot resample target 'rle:2x2:' to \(0, 3\)"):
        decode_mask("rle:2x2:", out_size=(0, 3))
    with pytest.raises(TargetError, match="non-empty 2-D array"):
        encode_rle_target(np.zeros((2, 2, 2), dtype=bool))
