"""What a reduced-scale JPEG decode costs in fidelity and saves in time, for the paper's preprocessings.

`python -m bench.decode_fidelity [--quick] [--backbones a,b,c] [--sizes 512,384,256] [--images N] [--rounds R]`

Fidelity, on a real radiograph: pydicom-data's `RG1_UNCI.dcm` (1955 x 1841) written as a JPEG at
quality 95 (as MIMIC-CXR-JPG was made from DICOMs), decoded at full resolution and at each
reduced size (`DecodeSize`: Pillow's DCT scaling, then a bicubic resize to the shorter side), then
preprocessed for each backbone as extraction does (the first resize takes its output shape from
the full-resolution frame). Per backbone and size it prints the largest and the mean per-pixel
difference of the preprocessed inputs (in grey levels) and the cosine between the embeddings of
the two inputs. The weights are
seeded and made input-sensitive (`sensitive_encoder`): seeded random weights as initialised
embed every radiograph almost alike (cosine above 0.999 between an image and its mirror image),
which would make any cosine bound meaningless. As a yardstick, each backbone's cosine between the
full decode and the same radiograph moved down by 1% of its height is printed too.

Cost, on one core (one torch thread): decode + `preprocess_each` for all the backbones, at full
resolution and at each size, on radiograph-sized JPEGs (2544 x 3056, as `bench.preprocess`).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image
from pydicom.data import get_testdata_file

from adaptor_vlp.extract.backbones import BackboneSpec, UnknownBackbone, get_spec
from adaptor_vlp.extract.demo.anatomy import sample_anatomy
from adaptor_vlp.extract.demo.findings import sample_findings, sample_traits
from adaptor_vlp.extract.demo.radiograph import draw_frontal
from adaptor_vlp.extract.encoders import ImageEncoder, load_image_encoder
from adaptor_vlp.extract.image_transforms import DecodeSize, preprocess, preprocess_each
from adaptor_vlp.extract.images import DecodedImage, read_decoded, read_grayscale
from bench.common import Ratio, best_seconds, describe_machine, timed
from bench.extract import write_image_set
from bench.multi_extract import PAPER_BACKBONES

RADIOGRAPH = "RG1_UNCI.dcm"
JPEG_QUALITY = 95
"""MIMIC-CXR-JPG's JPEGs were written from the DICOMs at quality 95 (its PhysioNet page)."""
COSINE_BOUND = 0.9999
"""Issue 22: a reduced decode is faithful enough for `auto` when the embedding cosine is at least this."""
WEIGHTS_SEED = 0
CALIBRATION_IMAGES = 24
CALIBRATION_SIDE = 512
YARDSTICK_SHIFT = 0.01
"""The yardstick input: the radiograph moved down by this fraction of its height (rows wrapped round)."""


def radiograph_jpeg(folder: Path) -> Path:
    """The real radiograph RG1_UNCI.dcm, windowed to 8 bits as `read_grayscale` reads DICOMs, as a quality-95 JPEG."""
    path = Path(folder) / "RG1_UNCI.jpg"
    Image.fromarray(read_grayscale(get_testdata_file(RADIOGRAPH))).save(path, quality=JPEG_QUALITY)
    return path


def sensitive_encoder(name: str) -> ImageEncoder:
    """The registry entry with seeded random weights that tell radiographs apart, built offline.

    ViTs (timm): LayerScale factors set to 1 (DINOv2 initialises them to 1e-5, so its blocks add
    almost nothing) and every linear layer drawn from N(0, 1/fan_in), which keeps the residual
    stream's scale through the blocks. Networks with batch norm (ResNet-AE): running statistics
    recomputed over demo radiographs (`extract.demo`), as training would have set them, instead
    of the 0 / 1 they start with. Different radiographs then embed at cosines of 0.1-0.9.
    """
    spec = dataclasses.replace(get_spec(name), random_init_seed=WEIGHTS_SEED)
    encoder = load_image_encoder(spec)
    generator = torch.Generator().manual_seed(WEIGHTS_SEED)
    batch_norms = []
    with torch.no_grad():
        for module in encoder.model.modules():
            if isinstance(getattr(module, "gamma", None), torch.nn.Parameter):
                module.gamma.fill_(1.0)
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, module.weight.shape[1] ** -0.5, generator=generator)
            if isinstance(module, torch.nn.BatchNorm2d):
                batch_norms.append(module)
        if batch_norms:
            _calibrate(encoder, batch_norms)
    return encoder


def _calibrate(encoder: ImageEncoder, batch_norms: list[torch.nn.BatchNorm2d]) -> None:
    rng = np.random.default_rng(WEIGHTS_SEED)
    drawings = [draw_frontal(sample_findings(rng, sample_traits(rng), portable=False), sample_anatomy(rng), rng,
                             portable=False, side=CALIBRATION_SIDE) for _ in range(CALIBRATION_IMAGES)]
    for norm in batch_norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: the statistics of this one batch
    encoder.model.train()
    encoder.model(torch.stack([preprocess(drawing, encoder.spec) for drawing in drawings]))
    encoder.model.eval()


@dataclass(frozen=True)
class Fidelity:
    """A reduced decode against the full one, after one backbone's preprocessing and through its embedding."""

    backbone: str
    decode: DecodeSize
    max_grey_difference: float
    mean_grey_difference: float
    cosine: float

    @property
    def faithful(self) -> bool:
        return self.cosine >= COSINE_BOUND

    def line(self) -> str:
        return (f"{self.backbone} at {self.decode}: largest |difference| {self.max_grey_difference:.1f} grey levels, "
                f"mean {self.mean_grey_difference:.3f}; embedding cosine {self.cosine:.6f} "
                f"({'>=' if self.faithful else '<'} {COSINE_BOUND})")


def cosine(first: torch.Tensor, second: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(first.double(), second.double(), dim=0))


def fidelity(encoder: ImageEncoder, jpeg: Path, sizes: list[DecodeSize]) -> list[Fidelity]:
    """Each reduced decode of `jpeg` against its full decode, for the encoder's backbone."""
    spec = encoder.spec
    grey_level = spec.image.std[0] * 255.0  # normalised units per grey level (one std for every channel)
    full = preprocess(read_grayscale(jpeg), spec)
    reference = encoder.encode(full[None]).pooled[0]
    results = []
    for size in sizes:
        decoded = read_decoded(jpeg, size.pixels)
        (reduced,) = preprocess_each(decoded.gray, [spec], frame=decoded.frame)
        difference = (reduced - full).abs() * grey_level
        results.append(Fidelity(spec.name, size, float(difference.max()), float(difference.mean()),
                                cosine(reference, encoder.encode(reduced[None]).pooled[0])))
    return results


def yardstick(encoder: ImageEncoder, jpeg: Path) -> float:
    """The cosine between the radiograph's embedding and that of the same radiograph moved by 1% of its height."""
    gray = read_grayscale(jpeg)
    moved = np.roll(gray, round(YARDSTICK_SHIFT * gray.shape[0]), axis=0)
    embedded = encoder.encode(torch.stack([preprocess(gray, encoder.spec), preprocess(moved, encoder.spec)])).pooled
    return cosine(embedded[0], embedded[1])


@dataclass(frozen=True)
class Settings:
    backbones: tuple[str, ...]
    sizes: tuple[int, ...]
    images: int
    width: int
    height: int
    rounds: int

    def command(self, quick: bool) -> str:
        return (f"python -m bench.decode_fidelity{' --quick' if quick else ''} --backbones {','.join(self.backbones)} "
                f"--sizes {','.join(map(str, self.sizes))} --images {self.images} --width {self.width} "
                f"--height {self.height} --rounds {self.rounds}")


FULL = Settings(PAPER_BACKBONES, sizes=(512, 384, 256), images=8, width=2544, height=3056, rounds=3)
QUICK = dataclasses.replace(FULL, backbones=("tiny-vit", "tiny-resnet"), sizes=(256,), images=2, width=640,
                            height=768, rounds=1)


def decode_costs(settings: Settings, files: list[Path]) -> dict[DecodeSize, float]:
    """Seconds per image, one core: decode at each size (and full) + `preprocess_each` for every backbone."""
    specs = [get_spec(name) for name in settings.backbones]
    sizes = [DecodeSize(None), *(DecodeSize(pixels) for pixels in settings.sizes)]
    contenders = {size: (lambda s=size: timed(lambda: [_preprocessed(read_decoded(path, s.pixels), specs)
                                                        for path in files])) for size in sizes}
    best = best_seconds(contenders, settings.rounds)
    return {size: seconds / len(files) for size, seconds in best.items()}


def _preprocessed(decoded: DecodedImage, specs: list[BackboneSpec]) -> list[torch.Tensor]:
    return preprocess_each(decoded.gray, specs, frame=decoded.frame)


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Tiny backbones, one size, two small JPEGs: a smoke run."),
    backbones: str | None = typer.Option(None, "--backbones", help="Comma-separated image backbones "
                                         f"[default: {','.join(PAPER_BACKBONES)}]."),
    sizes: str | None = typer.Option(None, "--sizes", help="Comma-separated decode sizes, shorter side in pixels "
                                     "[default: 512,384,256]."),
    images: int | None = typer.Option(None, "--images", min=1, help="Distinct JPEGs timed [default: 8]."),
    width: int | None = typer.Option(None, "--width", min=16, help="Timed JPEGs' width [default: 2544]."),
    height: int | None = typer.Option(None, "--height", min=16, help="Timed JPEGs' height [default: 3056]."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved timing rounds [default: 3]."),
) -> None:
    """Fidelity of reduced-scale decodes on a real radiograph, and their cost against a full decode on one core."""
    defaults = QUICK if quick else FULL
    chosen = {"images": images, "width": width, "height": height, "rounds": rounds,
              "backbones": tuple(name.strip() for name in backbones.split(",")) if backbones else None,
              "sizes": _sizes(sizes) if sizes else None}
    settings = dataclasses.replace(defaults, **{name: value for name, value in chosen.items() if value is not None})
    try:
        for name in settings.backbones:
            if get_spec(name).image is None:
                raise typer.BadParameter(f"{name!r} is a text backbone", param_hint="--backbones")
    except UnknownBackbone as error:
        raise typer.BadParameter(str(error), param_hint="--backbones") from None
    torch.set_num_threads(1)
    typer.echo("bench.decode_fidelity: reduced-scale JPEG decodes, fidelity on a real radiograph and cost on one core")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine("cpu").line())
    reduced = [DecodeSize(pixels) for pixels in settings.sizes]
    with tempfile.TemporaryDirectory(prefix="bench-decode-fidelity-") as folder:
        jpeg = radiograph_jpeg(Path(folder))
        typer.echo(f"radiograph: {RADIOGRAPH} as a quality-{JPEG_QUALITY} JPEG ({jpeg.stat().st_size / 1e6:.2f} MB, "
                   f"{'x'.join(map(str, read_grayscale(jpeg).shape[::-1]))})")
        worst: dict[DecodeSize, float] = {}
        for name in settings.backbones:
            encoder = sensitive_encoder(name)
            typer.echo(f"{name}: yardstick, the radiograph moved by {YARDSTICK_SHIFT:.0%} of its height: "
                       f"cosine {yardstick(encoder, jpeg):.6f}")
            for result in fidelity(encoder, jpeg, reduced):
                typer.echo(result.line())
                worst[result.decode] = min(worst.get(result.decode, 1.0), result.cosine)
        image_set = write_image_set(Path(folder), settings.images, settings.width, settings.height, noise=3.0)
        typer.echo(f"cost: {len(image_set.files)} distinct {settings.width}x{settings.height} JPEGs (mean "
                   f"{image_set.mean_bytes / 1e6:.2f} MB), decode + preprocess_each for all backbones, one torch "
                   f"thread, best of {settings.rounds} interleaved round(s)")
        costs = decode_costs(settings, list(image_set.files))
    full = costs[DecodeSize(None)]
    for size, seconds in costs.items():
        typer.echo(f"decode at {size} + preprocessing: {seconds * 1e3:.1f} ms per image")
    for size in reduced:
        typer.echo(Ratio(f"full/{size.pixels} px decode + preprocessing", full / costs[size], unit="x").line())
        typer.echo(f"all backbones at {size.pixels} px: worst cosine {worst[size]:.6f}, "
                   f"{'faithful' if worst[size] >= COSINE_BOUND else 'NOT faithful'} by the {COSINE_BOUND} bound")
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(DecodeSize.parse(part.strip()).pixels for part in text.split(","))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--sizes") from None
    if None in values:
        raise typer.BadParameter("give reduced sizes in pixels; full resolution is always measured",
                                 param_hint="--sizes")
    return values


if __name__ == "__main__":
    app()
