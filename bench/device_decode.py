"""JPEG decoding on the device (`--decoder gpu`) against Pillow on one CPU core, at full resolution.

`python -m bench.device_decode [--quick] [--device cuda|cpu] [--images N] [--batch-size B] [--rounds R]`
writes radiograph-sized grayscale JPEGs (as `bench.extract`) and times, per image:

- Pillow's full-resolution decode on one core (what `--decoder cpu` costs a reader core for the
  paper's backbones, which decode at full resolution);
- `extract.device_decoding.decode_batch` on `--device`, a batch at a time (torchvision's
  decode_jpeg: nvJPEG on CUDA), including the copy of the pixels back to the host, where the
  preprocessing runs.

It prints both rates, their ratio (how many CPU cores one device decoder replaces) and the largest
per-pixel difference between the two decodes (nvJPEG's IDCT is not libjpeg-turbo's), which is why
a store records its decoder. On `--device cpu` torchvision decodes with libjpeg-turbo too: a
smoke run of the path, not a comparison.
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

from adaptor_vlp.extract.device_decoding import decode_batch
from adaptor_vlp.extract.images import DecodedImage, read_grayscale
from bench.common import Ratio, best_seconds, describe_machine, timed
from bench.extract import Device, write_image_set


@dataclass(frozen=True)
class Settings:
    images: int
    batch_size: int
    width: int
    height: int
    rounds: int

    def command(self, quick: bool, device: Device) -> str:
        return (f"python -m bench.device_decode{' --quick' if quick else ''} --device {device.value} "
                f"--images {self.images} --batch-size {self.batch_size} --width {self.width} --height {self.height} "
                f"--rounds {self.rounds}")


FULL = Settings(images=64, batch_size=32, width=2544, height=3056, rounds=2)
QUICK = dataclasses.replace(FULL, images=4, batch_size=2, width=640, height=768, rounds=1)


def device_decode(files: list[Path], batch_size: int, device: str) -> list[DecodedImage]:
    decoded = []
    for start in range(0, len(files), batch_size):
        decoded.extend(decode_batch(files[start:start + batch_size], None, device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return decoded


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Four small JPEGs, one round: a smoke run."),
    device: Device = typer.Option(Device.CUDA, "--device", help="Where decode_jpeg runs: cuda (nvJPEG) or cpu."),
    images: int | None = typer.Option(None, "--images", min=1, help="JPEGs decoded per round [default: 64]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="JPEGs per device call [default: 32]."),
    width: int | None = typer.Option(None, "--width", min=16, help="JPEG width [default: 2544]."),
    height: int | None = typer.Option(None, "--height", min=16, help="JPEG height [default: 3056]."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds [default: 2]."),
) -> None:
    """Full-resolution JPEG decoding: the device decoder, batched, against Pillow on one core."""
    if device is Device.CUDA and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible to torch on this machine", param_hint="--device")
    chosen = {"images": images, "batch_size": batch_size, "width": width, "height": height, "rounds": rounds}
    settings = dataclasses.replace(QUICK if quick else FULL,
                                   **{name: value for name, value in chosen.items() if value is not None})
    torch.set_num_threads(1)
    typer.echo("bench.device_decode: full-resolution JPEG decoding, device decoder against one CPU core")
    typer.echo(f"command: {settings.command(quick, device)}")
    typer.echo(describe_machine(device.value).line())
    with tempfile.TemporaryDirectory(prefix="bench-device-decode-") as folder:
        image_set = write_image_set(Path(folder), settings.images, settings.width, settings.height, noise=3.0)
        files = list(image_set.files)
        typer.echo(f"images: {len(files)} distinct {settings.width}x{settings.height} grayscale JPEGs (mean "
                   f"{image_set.mean_bytes / 1e6:.2f} MB); best of {settings.rounds} interleaved round(s)")
        device_decode(files[:1], 1, device.value)  # start-up (CUDA context, nvJPEG handles) outside the timing
        best = best_seconds({
            "cpu": lambda: timed(lambda: [read_grayscale(path) for path in files]),
            "device": lambda: timed(lambda: device_decode(files, settings.batch_size, device.value)),
        }, settings.rounds)
        on_device = device_decode(files, settings.batch_size, device.value)
        largest = max(int(np.abs(read_grayscale(path).astype(np.int16) - image.gray.astype(np.int16)).max())
                      for path, image in zip(files, on_device))
    cpu_rate, device_rate = len(files) / best["cpu"], len(files) / best["device"]
    typer.echo(f"Pillow on one core: {cpu_rate:.1f} images/s ({best['cpu'] / len(files) * 1e3:.1f} ms per image)")
    typer.echo(f"decode_jpeg on {device.value}, batches of {settings.batch_size}, pixels back on the host: "
               f"{device_rate:.1f} images/s ({best['device'] / len(files) * 1e3:.2f} ms per image)")
    typer.echo(f"largest per-pixel difference between the two decodes: {largest} grey levels")
    typer.echo(Ratio("device decode/one CPU core", device_rate / cpu_rate, unit="x").line())
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
