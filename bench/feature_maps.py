"""What caching ResNet-AE-101's intermediate maps costs: bytes per image and seconds per image, by input size.

`python -m bench.feature_maps [--sizes 224,896] [--images N] [--rounds R] [--quick]` runs
torchxrayvision's ResNet-AE-101 (the `101-elastic` architecture, seeded weights: nothing is
downloaded) on a real chest radiograph (pydicom-data's RG1_UNCI.dcm, area-resized to each size and
scaled to xrv's [-1024, 1024]) and prints, per size: the raw float16 bytes of the four maps the
published U-Net reads, the bytes a store holds for them (`CacheStore` with `--feature-maps`'s
codec, written for N images), their ratio, the projected totals for SIIM and RSNA, and the seconds
per image of the encoder alone, of the encoder with its maps, and of writing those maps into the
store, in interleaved rounds (best round kept); and the forward GFLOPs per image of the published
U-Net decoder reading those maps (`evaluate.unet_decoder`, counted by torch.utils.flop_counter).
Seeded weights are not the published ones: a trained encoder's ReLU maps may hold more zeros and compress better,
so the stored bytes are an estimate and the raw bytes the bound.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import typer
from torch.nn import functional

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance
from adaptor_vlp.cache_schema.layout import FEATURE_MAP_ARRAYS
from adaptor_vlp.evaluate.unet_decoder import UNetDecoder, UNetGeometry
from adaptor_vlp.extract.images import read_grayscale
from adaptor_vlp.extract.xrv_autoencoder import AutoencoderTower
from bench.common import best_seconds, describe_machine, timed

SIIM_IMAGES = 12_047
"""SIIM-ACR's stage-1 training images with a mask row (siim-pneumothorax-train-rle.csv.gz, unique ImageIds)."""
RSNA_IMAGES = 26_684
"""RSNA Pneumonia stage-2 training images (kaggle_stage_2_train_labels.csv.zip, unique patientIds)."""

app = typer.Typer(add_completion=False)


def radiograph(size: int) -> torch.Tensor:
    """RG1_UNCI.dcm as a (1, 1, size, size) batch in torchxrayvision's range, area-resized."""
    from pydicom.data import get_testdata_file

    pixels = read_grayscale(get_testdata_file("RG1_UNCI.dcm")).astype(np.float32) / 255.0
    image = torch.from_numpy(pixels)[None, None]
    return (functional.interpolate(image, size=(size, size), mode="area") - 0.5) * 2048


def unet_gflop(maps: list[np.ndarray], side: int) -> float:
    """Forward GFLOPs of the published U-Net decoder for one image (768-d Adaptor embedding, these maps)."""
    from torch.utils.flop_counter import FlopCounterMode

    decoder = UNetDecoder(UNetGeometry(768, tuple(level.shape[1] for level in maps), side)).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        decoder(torch.zeros(1, 768), [torch.from_numpy(level) for level in maps])
    return counter.get_total_flops() / 1e9


def store_bytes(maps: list[np.ndarray], n_images: int, folder: Path) -> int:
    """Bytes on disk of the maps' arrays in a store of n_images copies written as one shard."""
    shapes = tuple(tuple(level.shape[1:]) for level in maps)
    provenance = Provenance(dataset="bench", manifest_sha256="0" * 64, modality=Modality.IMAGE, backbone="resnet-ae",
                            weights_id="random-init", weights_sha256="0" * 64, preprocessing={}, pooling="mean")
    store = CacheStore.create(folder / "maps.zarr", provenance, [f"{i:08d}" for i in range(n_images)],
                              [str(i) for i in range(n_images)], ["train"] * n_images,
                              FeatureShape(embedding_dim=512, feature_maps=shapes), shard_rows=n_images)
    arrays = {ArrayName.EMBEDDING: np.zeros((n_images, 512), dtype=np.float32)}
    arrays.update({name: np.repeat(level, n_images, axis=0) for name, level in zip(FEATURE_MAP_ARRAYS, maps)})
    store.write_shard(0, arrays)
    return sum(store.shard_file(name, 0).stat().st_size for name in FEATURE_MAP_ARRAYS)


@app.command()
def main(
    sizes: str = typer.Option("224,896", "--sizes", help="Input sides in pixels (224 RSNA, 896 SIIM as published)."),
    images: int = typer.Option(4, "--images", min=1, help="Images written into the measuring store."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Interleaved timing rounds (best kept)."),
    quick: bool = typer.Option(False, "--quick", help="One small size, one image, one round (a smoke test)."),
) -> None:
    """Prints bytes per image and seconds per image of ResNet-AE-101's four skip maps, per input size."""
    import torchxrayvision as xrv

    side_list = [64] if quick else [int(side) for side in sizes.split(",")]
    images, rounds = (1, 1) if quick else (images, rounds)
    options = "--quick" if quick else f"--sizes {sizes} --images {images} --rounds {rounds}"
    print(f"command: python -m bench.feature_maps {options}")
    print(describe_machine().line())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = AutoencoderTower(xrv.autoencoders.ResNetAE101()).eval()
    print("| input px | maps (C x H x W) | raw float16 MiB/image | stored MiB/image | ratio | SIIM GiB | RSNA GiB "
          "| encoder s/image | encoder + maps s/image | store write s/image | U-Net GFLOP/image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for side in side_list:
        pixels = radiograph(side)
        with torch.inference_mode():
            _, _, maps = tower.forward_with_maps(pixels)
        maps = [level.numpy().astype(np.float16) for level in maps]
        raw = sum(level.nbytes for level in maps)
        folder = Path(tempfile.mkdtemp(prefix="bench-maps-"))
        written = {"n": 0}

        def write_store(folder: Path = folder, written: dict[str, int] = written,
                        maps: list[np.ndarray] = maps) -> float:
            target = folder / f"round-{written['n']}"
            written["n"] += 1
            target.mkdir()
            return timed(lambda: store_bytes(maps, images, target)) / images

        def forward(with_maps: bool, pixels: torch.Tensor = pixels) -> float:
            with torch.inference_mode():
                return timed(lambda: tower.forward_with_maps(pixels) if with_maps else tower(pixels))

        try:
            best = best_seconds({"encoder": lambda: forward(False), "maps": lambda: forward(True),
                                 "write": write_store}, rounds)
            stored = store_bytes(maps, images, Path(tempfile.mkdtemp(dir=folder))) / images
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        shapes = ", ".join("x".join(str(n) for n in level.shape[1:]) for level in maps)
        print(f"| {side} | {shapes} | {raw / 2**20:.2f} | {stored / 2**20:.2f} | {raw / stored:.2f} "
              f"| {stored * SIIM_IMAGES / 2**30:,.0f} | {stored * RSNA_IMAGES / 2**30:,.0f} | {best['encoder']:.2f} "
              f"| {best['maps']:.2f} | {best['write']:.2f} | {unet_gflop(maps, side):.1f} |")


if __name__ == "__main__":
    app()
