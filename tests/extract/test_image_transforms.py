"""Model inputs from grayscale arrays: the image steps, the paper's area resize, views, and each library's own
processor.

The comparisons run on the real chest radiograph RG1_UNCI.dcm (1955 x 1841) that ships in
pydicom-data. Differences are in grey levels (0..255) unless said otherwise.
"""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from adaptor_vlp.cache_schema.geometry import resized_shape
from adaptor_vlp.extract.backbones import (
    BackboneSpec,
    ImagePreprocessing,
    ImageStep,
    Interpolation,
    Modality,
    Pooling,
    Source,
    StepOp,
    get_spec,
)
from adaptor_vlp.extract.image_transforms import (
    DecodeSize,
    DecodeSizeTooSmall,
    apply_step,
    area_resize,
    augmented_view,
    check_decode_size,
    decode_size,
    image_preprocessing,
    least_decode_size,
    pass_decode_size,
    preprocess,
    preprocess_each,
    view_seed,
)
from adaptor_vlp.extract.images import read_grayscale

SPEC = get_spec("tiny-vit")
SIZE = SPEC.image_size


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    return read_grayscale(get_testdata_file("RG1_UNCI.dcm"))


def image_spec(*steps: ImageStep, channels: int = 3, mean=None, std=None) -> BackboneSpec:
    return BackboneSpec(name="probe", modality=Modality.IMAGE, source=Source.TIMM, model_id="test_vit", dim=64,
                        pooling=Pooling.CLS, random_init_seed=1,
                        image=ImagePreprocessing(steps, channels, mean or (0.5,) * channels, std or (0.5,) * channels))


def overlap_matrix_area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An independent INTER_AREA: explicit pixel-overlap weight matrices, out = Wy @ image @ Wx^T (float64)."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        left = np.arange(n_out)[:, None] * scale
        pixel = np.arange(n_in)[None, :]
        overlap = np.minimum(left + scale, pixel + 1) - np.maximum(left, pixel)
        return np.clip(overlap, 0, None) / scale

    return weights(image.shape[0], height) @ image.astype(np.float64) @ weights(image.shape[1], width).T


def mgca_resize_img(image: np.ndarray, scale: int) -> np.ndarray:
    """MGCA's resize_img (longest side to `scale`, INTER_AREA, symmetric zero pad), INTER_AREA by the matrices above."""
    height, width = image.shape
    if height >= width:
        size = (scale, int(float(width) * (scale / float(height))))
    else:
        size = (int(float(height) * (scale / float(width))), scale)
    resized = np.rint(overlap_matrix_area_resize(image, *size))
    pad = scale - min(resized.shape)
    before, after = int(np.floor(pad / 2)), int(np.ceil(pad / 2))
    padding = [(0, 0), (before, after)] if height >= width else [(before, after), (0, 0)]
    return np.pad(resized, padding, "constant", constant_values=0)


def test_preprocess_gives_a_normalised_three_channel_square():
    pixels = preprocess(np.full((70, 90), 255, dtype=np.uint8), SPEC)

    assert pixels.shape == (3, SIZE, SIZE) and pixels.dtype == torch.float32
    expected = (1.0 - torch.tensor(SPEC.image.mean)) / torch.tensor(SPEC.image.std)
    torch.testing.assert_close(pixels[:, SIZE // 2, SIZE // 2], expected)


def test_area_resize_matches_an_independent_implementation_on_the_real_radiograph(radiograph):
    ours = area_resize(torch.from_numpy(radiograph.astype(np.float32)).unsqueeze(0), 256, 241)[0].double().numpy()
    reference = overlap_matrix_area_resize(radiograph, 256, 241)

    difference = np.abs(ours - reference)
    assert difference.max() < 1e-3, "the cumulative-sum and the overlap-matrix area averages must agree"
    assert abs(ours.mean() - radiograph.mean()) < 0.5, "area averaging keeps the mean grey level"


def test_area_resize_averages_whole_blocks_at_integer_factors_and_enlarges_by_coverage():
    image = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)

    halved = area_resize(image, 2, 2)
    torch.testing.assert_close(halved[0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    doubled = area_resize(torch.tensor([[[0.0, 3.0]]]), 1, 3)  # output pixels cover [0, 2/3), [2/3, 4/3), [4/3, 2)
    torch.testing.assert_close(doubled[0, 0], torch.tensor([0.0, 1.5, 3.0]))


def test_the_paper_geometry_is_mgca_resize_img_then_its_centre_crop(radiograph):
    spec = get_spec("dinov2-s")
    mgca = mgca_resize_img(radiograph, 256)
    expected = (mgca[16:240, 16:240] / 255.0 - 0.5) / 0.5  # DataTransforms (validation): CenterCrop(224), 0.5 / 0.5

    ours = preprocess(radiograph, spec)

    assert ours.shape == (3, 224, 224)
    difference = (ours[0].double().numpy() - expected) * 0.5 * 255  # back to grey levels
    assert np.abs(difference).max() <= 1.0 + 1e-6, "at most one grey level (rounding of exact halves)"
    assert np.mean(np.abs(difference) > 0.5) < 1e-3
    torch.testing.assert_close(ours[0], ours[2])


def test_the_paper_geometry_keeps_the_long_side_where_the_shorter_side_crop_cuts_it():
    portrait = np.full((300, 200), 128, dtype=np.uint8)
    portrait[:20] = 255  # the apices
    white = 1.0

    padded = preprocess(portrait, get_spec("dinov2-s"))
    cropped = preprocess(portrait, image_spec(ImageStep(StepOp.RESIZE_SHORTEST, 224, Interpolation.BICUBIC),
                                              ImageStep(StepOp.CENTER_CROP, 224)))

    assert padded[0, 0, 112] == pytest.approx(white, abs=0.02), "longest side fitted: the top rows survive"
    assert cropped[0, 0, 112] < white - 0.5, "shorter side fitted and cropped: the top rows are cut off"
    assert padded[0, 112, 0] == pytest.approx(-1.0), "the narrow side is zero-padded (black)"


def test_each_step_shapes_the_image_as_its_library_does():
    image = torch.zeros(1, 300, 200)

    assert apply_step(image, ImageStep(StepOp.RESIZE_SHORTEST, 100, Interpolation.BILINEAR)).shape == (1, 150, 100)
    assert apply_step(image, ImageStep(StepOp.RESIZE_LONGEST, 256, Interpolation.AREA)).shape == (1, 256, 170)
    assert apply_step(image, ImageStep(StepOp.RESIZE, 64, Interpolation.BICUBIC)).shape == (1, 64, 64)
    assert apply_step(image, ImageStep(StepOp.PAD_SQUARE)).shape == (1, 300, 300)
    assert apply_step(image, ImageStep(StepOp.CROP_SQUARE)).shape == (1, 200, 200)
    assert apply_step(image, ImageStep(StepOp.CENTER_CROP, 128)).shape == (1, 128, 128)


def test_timm_own_transform_and_ours_agree_on_the_real_radiograph(radiograph):
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    spec = get_spec("timm:test_vit.r160_in1k")
    pretrained_cfg = timm.models.get_pretrained_cfg("test_vit.r160_in1k").to_dict()
    transform = create_transform(**resolve_data_config({}, pretrained_cfg=pretrained_cfg))
    theirs = transform(Image.fromarray(radiograph).convert("RGB"))

    ours = preprocess(radiograph, spec)

    assert ours.shape == theirs.shape == (3, 160, 160)
    grey_levels = (ours - theirs).abs() * 0.5 * 255  # this config normalises with std 0.5
    assert grey_levels.max() <= 3.0 and grey_levels.mean() < 0.3, (grey_levels.max(), grey_levels.mean())


def test_a_hugging_face_image_processor_and_ours_agree_on_the_real_radiograph(radiograph, tmp_path):
    from PIL import Image
    from transformers import BitImageProcessor

    processor = BitImageProcessor(size={"shortest_edge": 518}, crop_size={"height": 518, "width": 518},
                                  resample=3, image_mean=[0.5307] * 3, image_std=[0.2583] * 3)
    theirs = torch.as_tensor(processor(Image.fromarray(radiograph).convert("RGB"),
                                       return_tensors="pt")["pixel_values"][0])

    ours = preprocess(radiograph, get_spec("rad-dino"))

    assert ours.shape == theirs.shape == (3, 518, 518)
    grey_levels = (ours - theirs).abs() * 0.2583 * 255
    assert grey_levels.max() <= 3.0 and grey_levels.mean() < 0.3, (grey_levels.max(), grey_levels.mean())


def test_torchxrayvision_own_transforms_and_ours_agree_on_the_real_radiograph(radiograph, monkeypatch):
    """The published ResNet-AE input: MGCA's 256 padded image, xrv normalize, XRayCenterCrop, XRayResizer(224, cv2).

    OpenCV is not installed; XRayResizer's cv2 engine is run with the independent INTER_AREA
    above standing in for cv2.resize, so the comparison exercises torchxrayvision's own code.
    """
    import sys
    import types

    import torchxrayvision as xrv

    fake_cv2 = types.ModuleType("cv2")
    fake_cv2.INTER_AREA = "area"
    fake_cv2.resize = lambda image, size, interpolation: overlap_matrix_area_resize(image, size[1], size[0])
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2)
    padded = mgca_resize_img(radiograph, 256).astype(np.float64)
    normalised = xrv.utils.normalize(padded, 255)[None]
    theirs = xrv.datasets.XRayResizer(224, engine="cv2")(xrv.datasets.XRayCenterCrop()(normalised))

    ours = preprocess(radiograph, get_spec("resnet-ae"))

    assert ours.shape == theirs.shape == (1, 224, 224)
    difference = np.abs(ours.double().numpy() - theirs)  # in torchxrayvision's units: 8 per grey level
    assert difference.max() <= 8.0 + 1e-3 and difference.mean() < 0.05, (difference.max(), difference.mean())
    default_engine = xrv.datasets.XRayResizer(224)(normalised)  # skimage: Gaussian anti-aliasing + bilinear
    assert np.abs(default_engine - theirs).mean() > difference.mean(), "the area engine is the one matched"


def test_decode_size_is_the_measured_size_else_full_resolution_for_area_steps_else_the_first_resize():
    assert decode_size(get_spec("dinov2-s")) == decode_size(get_spec("dinov2-b")) == 512  # bench.decode_fidelity
    assert decode_size(get_spec("resnet-ae")) is None
    area_first = image_spec(ImageStep(StepOp.RESIZE_LONGEST, 256, Interpolation.AREA), ImageStep(StepOp.PAD_SQUARE),
                            ImageStep(StepOp.CENTER_CROP, 224))
    assert decode_size(area_first) is None
    assert decode_size(get_spec("rad-dino")) == 518
    assert decode_size(SPEC) == SIZE


def test_preprocess_rejects_non_grayscale_input():
    with pytest.raises(ValueError, match="uint8 \\(H, W\\)"):
        preprocess(np.zeros((8, 8, 3), dtype=np.uint8), SPEC)


def textured(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(80, 72), dtype=np.uint8)


def test_augmented_view_is_deterministic_per_seed_and_differs_across_seeds():
    gray = textured(seed=3)

    first = augmented_view(gray, SPEC, seed=11)
    again = augmented_view(gray, SPEC, seed=11)
    other = augmented_view(gray, SPEC, seed=12)

    assert first.shape == (3, SIZE, SIZE) and first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, preprocess(gray, SPEC))


def test_augmented_views_have_the_backbones_channels():
    view = augmented_view(textured(seed=5), get_spec("resnet-ae"), seed=1)

    assert view.shape == (1, 224, 224)
    assert view.min() >= -1024 - 1e-3 and view.max() <= 1024 + 1e-3


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
    assert record["geometry"] == [
        {"op": "resize_longest", "size": 256, "interpolation": "area", "rounded": True},
        {"op": "pad_square"},
        {"op": "center_crop", "size": 224},
    ]
    assert record["image_size"] == 224 and record["grayscale"] == "replicated to 3 channels"
    assert record["mean"] == [0.5, 0.5, 0.5] and record["std"] == [0.5, 0.5, 0.5]
    assert "view_augmentation" in record
    resnet_ae = image_preprocessing(get_spec("resnet-ae"))
    assert resnet_ae["grayscale"] == "one channel" and resnet_ae["std"] == [0.5 / 1024]
    assert resnet_ae["geometry"][-1] == {"op": "resize", "size": 224, "interpolation": "area", "rounded": False}


def test_normalisation_to_torchxrayvisions_range_is_its_normalize():
    import torchxrayvision as xrv

    gray = textured(seed=6)
    spec = image_spec(ImageStep(StepOp.RESIZE, 64, Interpolation.AREA, rounded=False), channels=1, mean=(0.5,),
                      std=(0.5 / 1024,))
    ours = preprocess(gray, spec)[0].double().numpy()
    theirs = overlap_matrix_area_resize(xrv.utils.normalize(gray.astype(np.float64), 255), 64, 64)

    assert math.isclose(np.abs(ours - theirs).max(), 0.0, abs_tol=1e-2)


def test_a_spec_with_other_geometry_is_a_different_record():
    paper = get_spec("dinov2-s")
    other = dataclasses.replace(paper, image=dataclasses.replace(
        paper.image, steps=(ImageStep(StepOp.RESIZE_SHORTEST, 224, Interpolation.BICUBIC),
                            ImageStep(StepOp.CENTER_CROP, 224))))

    assert image_preprocessing(paper)["geometry"] != image_preprocessing(other)["geometry"]


def cumulative_sum_area_resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The area resize as first written: a float64 cumulative sum along each axis, read at the output edges."""
    def along(values: torch.Tensor, size: int, axis: int) -> torch.Tensor:
        length = values.shape[axis]
        if length == size:
            return values
        moved = values.movedim(axis, -1)
        integral = torch.nn.functional.pad(moved.cumsum(dim=-1), (1, 0))
        edges = torch.arange(size + 1, dtype=torch.float64) * (length / size)
        whole = edges.floor().clamp_(max=length - 1).long()
        at_edges = integral[..., whole] + (edges - whole).unsqueeze(0) * moved[..., whole]
        return ((at_edges[..., 1:] - at_edges[..., :-1]) * (size / length)).movedim(-1, axis)

    return along(along(image.to(torch.float64), height, -2), width, -1).to(image.dtype)


@pytest.mark.parametrize("shape, size", [((3056, 2544), (256, 213)), ((97, 80), (64, 53)), ((50, 60), (130, 7)),
                                         ((256, 256), (224, 224)), ((13, 9), (13, 20)), ((1, 5), (3, 7))])
def test_area_resize_of_whole_grey_levels_sums_blocks_to_the_cumulative_sums_bits(shape, size):
    grey_levels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, shape).astype(np.float32)).unsqueeze(0)
    fast = area_resize(grey_levels, *size, whole_levels=True)
    assert torch.equal(fast, cumulative_sum_area_resize(grey_levels, *size))
    assert torch.equal(area_resize(grey_levels / 7.3, *size), cumulative_sum_area_resize(grey_levels / 7.3, *size))


def test_preprocess_each_gives_each_backbones_own_input_bit_for_bit(radiograph):
    specs = [get_spec(name) for name in ("dinov2-s", "dinov2-b", "resnet-ae", "tiny-vit")]
    for spec, shared in zip(specs, preprocess_each(radiograph, specs), strict=True):
        assert torch.equal(shared, preprocess(radiograph, spec)), spec.name


def test_a_pass_decodes_at_full_resolution_for_an_area_resize_else_at_the_largest_default():
    paper = [get_spec(name) for name in ("dinov2-s", "dinov2-b", "resnet-ae")]
    assert pass_decode_size(paper) == DecodeSize(None)
    assert pass_decode_size(paper[:2]) == DecodeSize(512)
    assert pass_decode_size([SPEC, get_spec("rad-dino")]) == DecodeSize(518)
    assert pass_decode_size([SPEC]) == DecodeSize(decode_size(SPEC)) == DecodeSize(SIZE)
    assert pass_decode_size([SPEC, get_spec("resnet-ae")]) == DecodeSize(None)


def test_a_reduced_decode_resizes_to_the_shape_of_the_full_resolution_frame(radiograph):
    """1955 x 1841 decoded at 512 is 544 x 512, whose own longest-side resize to 256 is one pixel narrower."""
    dinov2 = get_spec("dinov2-s")
    reduced = np.asarray(Image.fromarray(radiograph).resize((512, 544), Image.Resampling.BICUBIC))
    first = dinov2.image.steps[0]
    assert resized_shape(first.op.value, 256, *reduced.shape) == (256, 240)
    assert resized_shape(first.op.value, 256, *radiograph.shape) == (256, 241)
    framed = preprocess_each(reduced, [dinov2], frame=radiograph.shape)[0]
    shifted = preprocess(reduced, dinov2)
    full = preprocess(radiograph, dinov2)
    assert (framed - full).abs().mean() < (shifted - full).abs().mean() / 2
    assert torch.equal(preprocess_each(radiograph, [dinov2], frame=radiograph.shape)[0], full)


def test_a_decode_size_below_a_backbones_first_resize_or_before_a_fixed_crop_is_refused():
    check_decode_size(DecodeSize(256), [get_spec("dinov2-s"), SPEC])  # a reduced decode above every first resize
    with pytest.raises(DecodeSizeTooSmall, match="too small for backbone 'dinov2-s': its steps need at least 256 px"):
        check_decode_size(DecodeSize(224), [get_spec("dinov2-s")])
    crop_first = image_spec(ImageStep(StepOp.CENTER_CROP, 32), ImageStep(StepOp.RESIZE, 16, Interpolation.BICUBIC))
    assert least_decode_size(crop_first) is None and decode_size(crop_first) is None
    with pytest.raises(DecodeSizeTooSmall, match="its steps need full resolution"):
        check_decode_size(DecodeSize(512), [crop_first])
    check_decode_size(DecodeSize(None), [crop_first])
    padded_first = image_spec(ImageStep(StepOp.PAD_SQUARE), ImageStep(StepOp.RESIZE, 16, Interpolation.BICUBIC))
    assert least_decode_size(padded_first) == 16


def test_decode_sizes_read_and_record_as_full_or_pixels():
    assert DecodeSize.parse("full") == DecodeSize(None) and DecodeSize(None).record() == "full"
    assert DecodeSize.parse("256") == DecodeSize(256) and DecodeSize(256).record() == 256
    for text in ("0", "-3", "big", "25.5"):
        with pytest.raises(ValueError, match=f"decode size '{text}'"):
            DecodeSize.parse(text)
