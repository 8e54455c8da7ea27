"""The paper's whole study on one GPU node, projected from measured rates and stated assumptions.

`python -m bench.projection [--cores N] [--decode-ms MS] [--preprocess-ms S,B,AE,SHARED]
[--forward S,B,AE] [--adaptor-step-ms MS] ...` prints a Markdown table: image extraction (the
paper's three backbones over MIMIC-CXR and the downstream sets, in three single passes and in
one pass), text extraction (five text backbones), the 15 Adaptors at the paper recipe and the
downstream heads, each with its work, its rate, what bounds it and its time, and the list of
inputs with where each comes from. Every input is an option, so a figure measured on a GPU
(`make bench-gpu`) replaces its assumption without editing anything. Nothing is measured here:
this is arithmetic on the inputs, written down so that it can be checked and rerun.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import typer

PAPER_IMAGE_BACKBONES = ("dinov2-s", "dinov2-b", "resnet-ae")


@dataclass(frozen=True)
class Inputs:
    """Everything the projection rests on; `sources` says where each value comes from."""

    mimic_images: int = 377_110
    downstream_images: int = 73_000
    mimic_reports: int = 227_835
    text_backbones: int = 5
    adaptors: int = 15
    cores: int = 16
    thread_scaling: float = 0.9
    decode_ms: float = 57.0
    jpeg_bytes_factor: float = 1.51 / 1.39
    preprocess_ms: tuple[float, float, float, float] = (22.0, 17.0, 19.0, 20.0)
    forward: tuple[float, float, float] = (10_000.0, 5_000.0, 5_000.0)
    text_forward: float = 3_000.0
    tokenizer_per_core: float = 2_100.0
    epochs: int = 50
    steps_per_epoch: int = 360
    adaptor_step_ms: float = 2.0
    epoch_overhead_s: float = 0.8
    run_overhead_s: float = 4.0
    classification_runs_per_adaptor: int = 6
    classification_run_s: float = 5.0
    segmentation_train_images: tuple[int, int] = (8_400, 18_700)
    segmentation_epochs: int = 50
    segmentation_gflop_per_sample: float = 1.0
    segmentation_tflops: float = 20.0
    feature_map_images: tuple[int, int] = (12_047, 26_684)
    feature_map_sizes: tuple[int, int] = (896, 224)
    feature_map_mib: tuple[float, float] = (38.21, 2.73)
    feature_map_write_s: tuple[float, float] = (2.0, 0.06)
    unet_gflop: tuple[float, float] = (237.4, 14.9)

    def sources(self) -> list[str]:
        """Each input with its value and its origin (measured, and how; or assumed, and on what)."""
        s, b, ae, shared = self.preprocess_ms
        return [
            f"images: {self.mimic_images:,} MIMIC-CXR-JPG 2.0.0 (PhysioNet) + {self.downstream_images:,} downstream "
            "(RSNA, COVIDx, SIIM; issue 14's ~450k radiographs in all); assumed to cost what a MIMIC JPEG costs",
            f"reports: {self.mimic_reports:,} studies with a usable report, through {self.text_backbones} text "
            f"backbones (BERT, BioBERT, ClinicalBERT, PubMedBERT, CXR-BERT); {self.adaptors} Adaptors = 3 image x 5 "
            "text backbones",
            f"node: {self.cores} cores, {self.cores - 1} decoding (one feeds the GPU), {self.thread_scaling:g} of "
            "linear scaling (assumed, BENCHMARKS 'Scale on paper')",
            f"decode of a full-resolution 1.39 MB JPEG: {self.decode_ms:g} ms per core, x{self.jpeg_bytes_factor:.2f} "
            "for MIMIC's 1.51 MB mean (measured: bench.preprocess; entropy decoding scales with bytes)",
            f"preprocessing at full resolution, ms per core: dinov2-s {s:g}, dinov2-b {b:g}, resnet-ae {ae:g}, all "
            f"three in one pass {shared:g} (measured: bench.preprocess)",
            f"GPU forward, images/s (bf16, batch 256, H100-class): dinov2-s {self.forward[0]:,.0f}, dinov2-b "
            f"{self.forward[1]:,.0f}, resnet-ae {self.forward[2]:,.0f} (assumed: 20-30% of the dense bf16 peak at "
            "11.0, 43.9 and 13.9 GFLOPs per image, counted by torch.utils.flop_counter)",
            f"text: BERT-base at 112 tokens {self.text_forward:,.0f} reports/s on the GPU (assumed), tokenizer "
            f"{self.tokenizer_per_core:,.0f} reports/s on the feeding core (measured, BENCHMARKS 'Scale on paper'), "
            "in series",
            f"Adaptor, paper recipe: {self.epochs} epochs x {self.steps_per_epoch} steps at batch 1024; "
            f"{self.adaptor_step_ms:g} ms per step on the GPU (assumed, BENCHMARKS 'Stacked sweeps': launch-bound, "
            "340 operations x 5 us, plus 0.3 ms copying the batch; its 121 GFLOP are 0.3 ms at 40% of an H200's "
            f"bf16 peak); {self.epoch_overhead_s:g} s per epoch (validation, checkpoint) and {self.run_overhead_s:g} s "
            "per run (opening and loading the stores), both measured on this CPU at MIMIC-CXR's size (bench.train "
            "part 3)",
            f"classification heads: {self.classification_runs_per_adaptor} per Adaptor (RSNA, COVIDx at 1/10/100%), "
            f"{self.classification_run_s:g} s each on pooled features (assumed)",
            f"segmentation heads: per image backbone (`evaluate segment --vision`), SIIM and RSNA with "
            f"{self.segmentation_train_images[0]:,} and {self.segmentation_train_images[1]:,} training images "
            f"(assumed: 70% of each), 1+10+100% of them, at most {self.segmentation_epochs} epochs, "
            f"{self.segmentation_gflop_per_sample:g} GFLOP per sample and step (flop counter, TokenGridDecoder on "
            f"16 x 16 tokens), {self.segmentation_tflops:g} TFLOP/s effective (assumed)",
            f"ResNet-AE feature maps (`extract images --feature-maps`): SIIM's {self.feature_map_images[0]:,} images "
            f"at {self.feature_map_sizes[0]} px and RSNA's {self.feature_map_images[1]:,} at {self.feature_map_sizes[1]} "
            f"px (the published crop sizes), {self.feature_map_mib[0]:g} and {self.feature_map_mib[1]:g} MiB stored "
            f"per image, {self.feature_map_write_s[0]:g} and {self.feature_map_write_s[1]:g} s per image to compress "
            "and write on one core (measured: bench.feature_maps, seeded ResNet-AE-101 weights, this 2-core CPU); "
            "the GPU forward at 896 px assumed 16x the 224 px cost",
            f"ResNet-AE U-Net heads: {self.unet_gflop[0]:g} and {self.unet_gflop[1]:g} GFLOP per image forward "
            "(measured: bench.feature_maps, flop counter), a training step 3x that (assumed), on the segmentation "
            "heads' training images, fractions, epochs and TFLOP/s above",
        ]


@dataclass(frozen=True)
class Row:
    """One stage of the study: what it does, how fast, what bounds it, how long."""

    stage: str
    work: str
    rate: str
    bound: str
    seconds: float


def image_rows(inputs: Inputs) -> tuple[list[Row], Row]:
    """The three single passes (one row each) and the one pass over all three backbones."""
    images = inputs.mimic_images + inputs.downstream_images
    decoders = (inputs.cores - 1) * inputs.thread_scaling
    decode_ms = inputs.decode_ms * inputs.jpeg_bytes_factor

    def row(stage: str, preprocess_ms: float, forward: float) -> Row:
        reader = decoders * 1e3 / (decode_ms + preprocess_ms)
        rate = min(reader, forward)
        bound = "decode + preprocess" if reader < forward else "GPU forward"
        return Row(stage, f"{images:,} images", f"reader {reader:,.0f}/s, forward {forward:,.0f}/s",
                   bound, images / rate)

    singles = [row(f"images, {name} alone", inputs.preprocess_ms[k], inputs.forward[k])
               for k, name in enumerate(PAPER_IMAGE_BACKBONES)]
    serial_forward = 1.0 / sum(1.0 / rate for rate in inputs.forward)
    return singles, row("images, all three in one pass", inputs.preprocess_ms[3], serial_forward)


def later_rows(inputs: Inputs) -> list[Row]:
    """Texts, Adaptors and heads: the same whichever way the images were extracted."""
    text_rate = 1.0 / (1.0 / inputs.text_forward + 1.0 / inputs.tokenizer_per_core)
    adaptor_run = (inputs.epochs * (inputs.steps_per_epoch * inputs.adaptor_step_ms / 1e3 + inputs.epoch_overhead_s)
                   + inputs.run_overhead_s)
    fraction_sum = 0.01 + 0.10 + 1.00
    segmentation = sum(images * fraction_sum * inputs.segmentation_epochs * inputs.segmentation_gflop_per_sample
                       for images in inputs.segmentation_train_images) / (inputs.segmentation_tflops * 1e3)
    classification_runs = inputs.adaptors * inputs.classification_runs_per_adaptor
    unet = sum(images * fraction_sum * inputs.segmentation_epochs * 3 * gflop for images, gflop
               in zip(inputs.segmentation_train_images, inputs.unet_gflop)) / (inputs.segmentation_tflops * 1e3)
    return [
        Row("texts", f"{inputs.text_backbones} x {inputs.mimic_reports:,} reports", f"{text_rate:,.0f} reports/s",
            "tokenizer + forward in series", inputs.text_backbones * inputs.mimic_reports / text_rate),
        Row("Adaptors", f"{inputs.adaptors} x {inputs.epochs * inputs.steps_per_epoch:,} steps",
            f"{adaptor_run / 60:.1f} min per run", "Adaptor step", inputs.adaptors * adaptor_run),
        Row("classification heads", f"{classification_runs} runs", f"{inputs.classification_run_s:g} s per run",
            "assumed", classification_runs * inputs.classification_run_s),
        Row("segmentation heads", "2 DINOv2 backbones x 2 datasets x 1/10/100%", f"{segmentation:.0f} s per backbone",
            "decoder steps", 2 * segmentation),
        feature_map_row(inputs),
        Row("ResNet-AE U-Net heads", "2 datasets x 1/10/100%", f"{unet / 3600:.1f} h per backbone", "decoder steps",
            unet),
    ]


def feature_map_row(inputs: Inputs) -> Row:
    """The ResNet-AE stores with feature maps: a forward at each published crop size, compression on the CPU."""
    compressors = (inputs.cores - 1) * inputs.thread_scaling
    seconds = 0.0
    for images, size, write_s in zip(inputs.feature_map_images, inputs.feature_map_sizes, inputs.feature_map_write_s):
        forward = inputs.forward[PAPER_IMAGE_BACKBONES.index("resnet-ae")] / (size / 224) ** 2
        seconds += images / min(forward, compressors / write_s)
    gib = feature_map_gib(inputs)
    return Row("ResNet-AE feature maps", f"{sum(inputs.feature_map_images):,} images, {gib:,.0f} GiB",
               f"compress {compressors / max(inputs.feature_map_write_s):,.0f}-"
               f"{compressors / min(inputs.feature_map_write_s):,.0f} images/s", "compression + GPU forward", seconds)


def feature_map_gib(inputs: Inputs) -> float:
    """Disk the ResNet-AE feature maps take, SIIM and RSNA together."""
    return sum(images * mib for images, mib in zip(inputs.feature_map_images, inputs.feature_map_mib)) / 1024


def table(inputs: Inputs) -> list[str]:
    """The projection as Markdown: the stages, the two totals, the inputs."""
    singles, one_pass = image_rows(inputs)
    rest = later_rows(inputs)
    lines = ["| stage | work | rate | bound | time |", "|---|---|---|---|---|"]
    for row in [*singles, one_pass, *rest]:
        lines.append(f"| {row.stage} | {row.work} | {row.rate} | {row.bound} | {_duration(row.seconds)} |")
    after = sum(row.seconds for row in rest)
    three = sum(row.seconds for row in singles)
    lines += [
        f"| **study, images in three single passes** | | | | **{_duration(three + after)}** |",
        f"| **study, images in one pass** | | | | **{_duration(one_pass.seconds + after)}** |",
        "",
        f"One pass over the images is {three / one_pass.seconds:.2f}x the three single passes.",
        f"Disk: the ResNet-AE feature maps take {feature_map_gib(inputs):,.0f} GiB beside the embedding stores.",
        "",
        "Inputs:",
        *(f"- {source}" for source in inputs.sources()),
    ]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _floats(text: str, count: int, option: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in text.split(","))
    if len(values) != count or not all(math.isfinite(v) and v > 0 for v in values):
        raise typer.BadParameter(f"give {count} positive numbers separated by commas", param_hint=option)
    return values


app = typer.Typer(add_completion=False)


@app.command()
def main(
    cores: int | None = typer.Option(None, "--cores", min=2, help="The node's CPU cores [default: 16]."),
    decode_ms: float | None = typer.Option(None, "--decode-ms", min=0.1, help="Full-resolution decode of a 1.39 MB "
                                           "JPEG on one core, ms (bench.preprocess)."),
    preprocess_ms: str | None = typer.Option(None, "--preprocess-ms", help="Preprocessing on one core, ms: dinov2-s, "
                                             "dinov2-b, resnet-ae, all three at once (bench.preprocess)."),
    forward: str | None = typer.Option(None, "--forward", help="GPU forward, images/s: dinov2-s, dinov2-b, "
                                       "resnet-ae (bench.extract / bench.multi_extract --device cuda)."),
    adaptor_step_ms: float | None = typer.Option(None, "--adaptor-step-ms", min=0.01, help="One Adaptor step at "
                                                 "batch 1024 on the GPU, ms (the stacked-sweep benchmark)."),
) -> None:
    """Print the projection of the paper's study on one GPU node as a Markdown table with its inputs."""
    chosen = {"cores": cores, "decode_ms": decode_ms, "adaptor_step_ms": adaptor_step_ms,
              "preprocess_ms": None if preprocess_ms is None else _floats(preprocess_ms, 4, "--preprocess-ms"),
              "forward": None if forward is None else _floats(forward, 3, "--forward")}
    inputs = dataclasses.replace(Inputs(), **{name: value for name, value in chosen.items() if value is not None})
    for line in table(inputs):
        typer.echo(line)


if __name__ == "__main__":
    app()
