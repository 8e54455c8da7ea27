"""A segmentation store reads the whole image resized to the task's square, as the published runs did; the
size is in its provenance, and a store made at one size is refused for another with the field named."""
import shutil

import numpy as np
import torch
from torch.nn import functional
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ArrayName, CacheStore
from adaptor_vlp.cli import app
from adaptor_vlp.extract.backbone_spec import ImageStep, Interpolation, StepOp
from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.image_transforms import apply_step, decode_size
from adaptor_vlp.extract.segmentation_input import segmentation_input

runner = CliRunner()
COMMAND = ["extract", "images", "--dataset", "tiny", "--backbone", "tiny-vit", "--tokens", "--batch-size", "4",
           "--workers", "0", "--shard-rows", "4", "--device", "cpu"]


def test_the_paper_entries_read_the_whole_image_at_896_and_decode_it_whole():
    spec = segmentation_input(get_spec("dinov2-s"), 896)
    assert spec.image.steps == (ImageStep(StepOp.RESIZE, 896, Interpolation.OPENCV_LINEAR),)
    assert spec.image_size == 896 and spec.image.channels == 3
    assert decode_size(spec) is None, "a reduced decode would resample the pixels before the INTER_LINEAR resize"


def test_every_backbone_reads_the_segmentation_input_normalised_as_the_published_datasets_did():
    """MGCA's segmentation datasets Normalize(mean=0.5, std=0.5) whatever the backbone: [-1, 1], as the DINOv2
    entries read everything, but not xrv's [-1024, 1024] that ResNet-AE (one grey channel) reads elsewhere."""
    for name, channels in (("dinov2-s", 3), ("resnet-ae", 1), ("resnet18-random", 3)):
        spec = segmentation_input(get_spec(name), 224).image
        assert (spec.channels, spec.mean, spec.std) == (channels, (0.5,) * channels, (0.5,) * channels)
    assert get_spec("resnet-ae").image.std != (0.5,)


def test_the_opencv_linear_resize_samples_two_pixels_per_axis_without_antialiasing():
    """Halving a 1-pixel stripe pattern: INTER_LINEAR reads the pair around each output centre (half-pixel
    centres), so an 8 -> 4 shrink averages neighbours; an antialiased filter would spread wider."""
    image = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8) * 3
    resized = apply_step(image, ImageStep(StepOp.RESIZE, 4, Interpolation.OPENCV_LINEAR, rounded=False))
    expected = functional.avg_pool2d(image[None], 2)[0]
    torch.testing.assert_close(resized, expected)
    antialiased = apply_step(image[:, :, :7], ImageStep(StepOp.RESIZE, 3, Interpolation.BILINEAR, rounded=False))
    plain = apply_step(image[:, :, :7], ImageStep(StepOp.RESIZE, 3, Interpolation.OPENCV_LINEAR, rounded=False))
    assert not torch.allclose(antialiased, plain)


def test_segmentation_stores_are_named_by_size_and_one_at_another_size_is_refused(tiny_dataset, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_dataset[0] / "tiny", cache / "tiny", ignore=shutil.ignore_patterns("image", "text"))
    first = runner.invoke(app, [*COMMAND, "--cache", str(cache), "--segmentation-size", "32"])
    assert first.exit_code == 0, first.output
    folder = cache / "tiny" / "image"
    store = CacheStore.open(folder / "tiny-vit.seg32.zarr")
    preprocessing = store.provenance.preprocessing
    assert preprocessing["image_size"] == 32 and preprocessing["decode_size"] == "full"
    assert preprocessing["geometry"] == [{"op": "resize", "size": 32, "interpolation": "opencv-linear",
                                          "rounded": True}]
    assert store.features.token_count == (32 // 16) ** 2, "tiny-vit's 16 px patches on the 32 px square"
    assert not (folder / "tiny-vit.zarr").exists(), "the plain store (the backbone's own frame) is another store"

    other = runner.invoke(app, [*COMMAND, "--cache", str(cache), "--segmentation-size", "64"])
    assert other.exit_code == 0, other.output
    assert CacheStore.open(folder / "tiny-vit.seg64.zarr").provenance.preprocessing["image_size"] == 64
    shutil.rmtree(folder / "tiny-vit.seg64.zarr")
    shutil.move(folder / "tiny-vit.seg32.zarr", folder / "tiny-vit.seg64.zarr")
    moved = runner.invoke(app, [*COMMAND, "--cache", str(cache), "--segmentation-size", "64"])
    assert moved.exit_code != 0
    assert "provenance field 'preprocessing.image_size' differs: expected 64, found 32" in moved.output


def test_segmentation_views_are_warped_stores_beside_the_segmentation_store(tiny_dataset, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_dataset[0] / "tiny", cache / "tiny", ignore=shutil.ignore_patterns("image", "text"))
    refused = runner.invoke(app, [*COMMAND, "--cache", str(cache), "--segmentation-views", "2"])
    assert refused.exit_code != 0 and "need --segmentation-size" in refused.output
    done = runner.invoke(app, [*COMMAND, "--cache", str(cache), "--segmentation-size", "32",
                               "--segmentation-views", "2"])
    assert done.exit_code == 0, done.output
    folder = cache / "tiny" / "image"
    plain, first, second = (CacheStore.open(folder / name) for name in
                            ("tiny-vit.seg32.zarr", "tiny-vit.seg32.view1.zarr", "tiny-vit.seg32.view2.zarr"))
    assert "segmentation_view" not in plain.provenance.preprocessing
    assert first.provenance.preprocessing["segmentation_view"]["index"] == 1
    assert second.provenance.preprocessing["segmentation_view"]["warp"]["rotate_limit"] == 10.0
    tokens = [store.read(ArrayName.TOKENS) for store in (plain, first, second)]
    valid = plain.valid
    assert np.array_equal(plain.ids, first.ids) and np.array_equal(valid, second.valid)
    changed = [not np.allclose(view[valid], tokens[0][valid]) for view in tokens[1:]]
    assert all(changed), "each view warps some image (half the draws are the identity, twelve images per view)"
