"""What a segmentation store costs per image at the published sizes: bytes, preprocessing and forward time.

`python -m bench.segmentation_input [--backbones dinov2-s,dinov2-b] [--sizes 224,896] [--images 2]` builds
each paper DINOv2 entry with seeded weights (no download: timing does not depend on the values) and its
position table interpolated as the torch.hub models do, reads a synthetic 1024 x 1024 radiograph as the
published segmentation datasets do (`extract.segmentation_input`: the whole image resized to the size),
and reports per image: the resize and normalisation, the forward pass with patch tokens, and the float16
bytes a store holds for it (tokens, pooled embedding, token mask; stored uncompressed).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import timm
import torch
import typer
from safetensors.torch import save_file

from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.encoders import load_image_encoder
from adaptor_vlp.extract.image_transforms import preprocess
from adaptor_vlp.extract.segmentation_input import segmentation_input
from bench.common import describe_machine, timed

ARCHITECTURES = {"dinov2-s": "vit_small_patch14_dinov2", "dinov2-b": "vit_base_patch14_dinov2"}
NATIVE_SIZE = 518
FLOAT16_BYTES = 2


def main(backbones: str = typer.Option("dinov2-s,dinov2-b", "--backbones"),
         sizes: str = typer.Option("224,896", "--sizes"),
         images: int = typer.Option(2, "--images", min=1)) -> None:
    """Prints one line per backbone and size."""
    typer.echo(f"machine: {describe_machine()}; torch threads {torch.get_num_threads()}")
    gray = (np.random.default_rng(0).random((1024, 1024)) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        for name in backbones.split(","):
            checkpoint = _seeded_checkpoint(name, Path(folder))
            for size in (int(value) for value in sizes.split(",")):
                spec = segmentation_input(get_spec(name), size)
                encoder = load_image_encoder(spec, weights=checkpoint)
                preprocess(gray, spec)
                prepare = timed(lambda spec=spec: [preprocess(gray, spec) for _ in range(images)]) / images
                pixels = torch.stack([preprocess(gray, spec) for _ in range(images)])
                encoder.encode(pixels[:1], with_tokens=True)
                forward = timed(
                    lambda encoder=encoder, pixels=pixels: encoder.encode(pixels, with_tokens=True)
                ) / images
                count, width = encoder.token_count, encoder.dim
                stored = FLOAT16_BYTES * (count * width + width) + count
                typer.echo(f"{name} at {size} px: {count} tokens x {width}, resize+normalise {prepare:.3f} s/image, "
                           f"forward {forward:.2f} s/image, {stored:,} bytes/image in the store")


def _seeded_checkpoint(name: str, folder: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(ARCHITECTURES[name], pretrained=False, img_size=NATIVE_SIZE, num_classes=0)
    path = folder / f"{name}.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return path


if __name__ == "__main__":
    typer.run(main)
