"""What one radiograph costs a decoder core: decoding, and each backbone's preprocessing, alone and shared.

`python -m bench.preprocess [--quick] [--backbones a,b,c] [--images N] [--rounds R]` writes
radiograph-sized grayscale JPEGs (as `bench.extract` does) and times, on one core (one torch
thread), per image:

- decoding at the pass's decode size (`image_transforms.pass_decode_size`: full resolution for
  the paper's backbones) and at each backbone's own;
- each backbone's `preprocess` on the decoded image, and `preprocess_each` for all of them at once
  (their shared leading steps run once) against `preprocess` for each in turn;
- the first area resize of the full-resolution image (the paper's resize to 256), summing blocks
  of whole grey levels (`whole_levels=True`, what `preprocess` runs) against the full cumulative
  sum it replaced (the same bits, checked here).

These are the costs a decoding core pays per image, so they set the decode-bound rate of a GPU
node: images/s per core = 1 / (decode + preprocessing).
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

from adaptor_vlp.cache_schema.geometry import resized_shape
from adaptor_vlp.extract.backbone_spec import RESIZE_OPS
from adaptor_vlp.extract.backbones import BackboneSpec, ImageStep, Interpolation, UnknownBackbone, get_spec
from adaptor_vlp.extract.image_transforms import (
    DecodeSize,
    area_resize,
    decode_size,
    pass_decode_size,
    preprocess,
    preprocess_each,
)
from adaptor_vlp.extract.images import read_grayscale
from bench.common import Ratio, best_seconds, describe_machine, timed
from bench.extract import write_image_set
from bench.multi_extract import PAPER_BACKBONES

SHARED_GOAL = 2.0
"""Goal (ours): preprocessing the paper's three backbones together costs at most half of each in turn."""


@dataclass(frozen=True)
class Settings:
    backbones: tuple[str, ...]
    images: int
    width: int
    height: int
    rounds: int

    def command(self, quick: bool) -> str:
        return (f"python -m bench.preprocess{' --quick' if quick else ''} --backbones {','.join(self.backbones)} "
                f"--images {self.images} --width {self.width} --height {self.height} --rounds {self.rounds}")


FULL = Settings(PAPER_BACKBONES, images=8, width=2544, height=3056, rounds=3)
QUICK = dataclasses.replace(FULL, images=2, width=640, height=768, rounds=1)


def first_area_step(specs: list[BackboneSpec]) -> ImageStep | None:
    """The first step of the first backbone whose first resize averages areas (the paper's resize to 256)."""
    for spec in specs:
        step = next((step for step in spec.image.steps if step.op in RESIZE_OPS), None)
        if step is not None and step.interpolation is Interpolation.AREA:
            return step
    return None


def measure(settings: Settings, files: list[Path]) -> tuple[dict[str, float], list[str]]:
    """Per-image seconds of every contender (best interleaved round) and the lines describing them."""
    specs: list[BackboneSpec] = [get_spec(name) for name in settings.backbones]
    shared = pass_decode_size(specs)
    grays = [read_grayscale(path, shared.pixels) for path in files]
    contenders = {f"decode at {shared}": lambda: timed(lambda: [read_grayscale(p, shared.pixels) for p in files])}
    for spec in specs:
        own = DecodeSize(decode_size(spec))
        if own != shared:
            contenders[f"decode at {own} ({spec.name})"] = lambda o=own: timed(
                lambda: [read_grayscale(p, o.pixels) for p in files])
        contenders[f"preprocess {spec.name}"] = lambda s=spec: timed(lambda: [preprocess(g, s) for g in grays])
    contenders["preprocess_each, all together"] = lambda: timed(lambda: [preprocess_each(g, specs) for g in grays])
    area = first_area_step(specs)
    if area is not None:
        levels = [torch.from_numpy(gray.astype(np.float32)).unsqueeze(0) for gray in grays]
        shapes = [resized_shape(area.op.value, area.size, *gray.shape) for gray in grays]
        if not all(torch.equal(area_resize(x, *shape), area_resize(x, *shape, whole_levels=True))
                   for x, shape in zip(levels, shapes)):
            raise RuntimeError("block sums and cumulative sums gave different area resizes")
        for name, whole in (("cumulative sums", False), ("block sums", True)):
            contenders[f"area resize to {area.size}, {name}"] = lambda w=whole: timed(
                lambda: [area_resize(x, *shape, whole_levels=w) for x, shape in zip(levels, shapes)])
    best = best_seconds(contenders, settings.rounds)
    per_image = {name: seconds / len(files) for name, seconds in best.items()}
    lines = [f"{name}: {seconds * 1e3:.1f} ms per image" for name, seconds in per_image.items()]
    return per_image, lines


def ratios(per_image: dict[str, float], settings: Settings) -> list[Ratio]:
    separately = sum(per_image[f"preprocess {name}"] for name in settings.backbones)
    goal = SHARED_GOAL if tuple(settings.backbones) == PAPER_BACKBONES else None
    listed = [Ratio("preprocess_each/each in turn", separately / per_image["preprocess_each, all together"],
                    goal=goal, unit="x")]
    area = [name for name in per_image if name.startswith("area resize")]
    if area:
        listed.append(Ratio("area resize, block sums/cumulative sums", per_image[area[0]] / per_image[area[1]],
                            unit="x"))
    return listed


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Two small JPEGs, one round: a smoke run."),
    backbones: str | None = typer.Option(None, "--backbones", help="Comma-separated image backbones "
                                         f"[default: {','.join(PAPER_BACKBONES)}]."),
    images: int | None = typer.Option(None, "--images", min=1, help="Distinct JPEGs timed [default: 8]."),
    width: int | None = typer.Option(None, "--width", min=16, help="JPEG width [default: 2544]."),
    height: int | None = typer.Option(None, "--height", min=16, help="JPEG height [default: 3056]."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds [default: 3]."),
) -> None:
    """Per-image decode and preprocessing costs on one core, alone and shared between backbones."""
    defaults = QUICK if quick else FULL
    chosen = {"images": images, "width": width, "height": height, "rounds": rounds}
    names = tuple(name.strip() for name in backbones.split(",")) if backbones else defaults.backbones
    settings = dataclasses.replace(defaults, backbones=names,
                                   **{name: value for name, value in chosen.items() if value is not None})
    try:
        for name in names:
            if get_spec(name).image is None:
                raise typer.BadParameter(f"{name!r} is a text backbone", param_hint="--backbones")
    except UnknownBackbone as error:
        raise typer.BadParameter(str(error), param_hint="--backbones") from None
    torch.set_num_threads(1)
    typer.echo("bench.preprocess: per-image decode and preprocessing on one core, alone and shared")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine("cpu").line())
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as folder:
        image_set = write_image_set(Path(folder), settings.images, settings.width, settings.height, noise=3.0)
        typer.echo(f"images: {len(image_set.files)} distinct {settings.width}x{settings.height} grayscale JPEGs "
                   f"(mean {image_set.mean_bytes / 1e6:.2f} MB); one torch thread; best of {settings.rounds} "
                   "interleaved round(s)")
        per_image, lines = measure(settings, list(image_set.files))
    for line in lines:
        typer.echo(line)
    decode = per_image[next(name for name in per_image if name.startswith("decode at"))]
    together = per_image["preprocess_each, all together"]
    typer.echo(f"one core reads {1 / (decode + together):.1f} images/s for all of them in one pass "
               f"(decode {decode * 1e3:.1f} ms + preprocessing {together * 1e3:.1f} ms)")
    for ratio in ratios(per_image, settings):
        typer.echo(ratio.line())
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
