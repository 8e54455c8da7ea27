"""The paper's whole study on one GPU node, projected from measured rates and stated assumptions.

`python -m bench.projection [--cores N] [--decode-ms MS] [--preprocess-ms S,B,AE,SHARED]
[--reduced-speedup X] [--gpu-decode-per-s N] [--forward S,B,AE] [--stacked-step-ms MS]
[--segmentation-views K] [--segmentation-tflops T]` prints a Markdown table: image extraction (the
paper's three backbones over MIMIC-CXR and the downstream sets: three single passes, and one row per
decoding configuration: one pass at full resolution (exact, and what `auto` gives a pass holding
ResNet-AE), DINOv2 at 512 px with ResNet-AE split off at full resolution, every backbone at 512 px,
and JPEG decoding on the GPU), text extraction (six text entries: the five backbones, and CXR-BERT as the
published code embedded it; tokenised in the reader's worker processes), the 18 Adaptors stacked by image
backbone across text encoders, the classification heads,
and the segmentation tasks as the paper ran them (the stores at the published sizes with their
augmented views, the published decoder and U-Net heads), each with its work, its rate, what bounds
it and its time; then the study's total per configuration and the list of inputs with where each
comes from. The inputs a GPU run measures (`make bench-gpu`) are options, so a measured figure
replaces its assumption without editing anything. Nothing is measured here: this is arithmetic on the inputs,
written down so that it can be checked and rerun.
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
    text_backbones: int = 6
    adaptor_rows: int = 15
    cores: int = 16
    thread_scaling: float = 0.9
    decode_ms: float = 57.0
    jpeg_bytes_factor: float = 1.51 / 1.39
    preprocess_ms: tuple[float, float, float, float] = (22.0, 17.0, 19.0, 20.0)
    reduced_speedup: float = 1.47
    gpu_decode_per_s: float = 1_500.0
    forward: tuple[float, float, float] = (10_000.0, 5_000.0, 5_000.0)
    text_forward: float = 3_000.0
    tokenizer_per_core: float = 2_100.0
    epochs: int = 50
    steps_per_epoch: int = 360
    adaptor_stack: int = 6
    stacked_step_ms: float = 6.0
    epoch_overhead_s: float = 0.8
    run_overhead_s: float = 4.0
    classification_runs_per_adaptor: int = 6
    classification_run_s: float = 5.0
    segmentation_images: tuple[int, int] = (12_047, 26_684)
    segmentation_sizes: tuple[int, int] = (896, 224)
    segmentation_train_images: tuple[int, int] = (8_400, 18_700)
    segmentation_epochs: int = 100
    segmentation_head_sets: int = 24
    segmentation_views: int = 2
    protocols: int = 2
    decoder_gflop: tuple[float, float] = (422.7, 25.1)
    segmentation_tflops: float = 20.0
    token_mb: tuple[tuple[float, float], tuple[float, float]] = ((3.151, 6.297), (0.198, 0.395))
    vit_896_cost: float = 20.0
    feature_map_mib: tuple[float, float] = (38.21, 2.73)
    feature_map_write_s: tuple[float, float] = (2.0, 0.06)
    unet_gflop: tuple[float, float] = (237.4, 14.9)

    @property
    def adaptors(self) -> int:
        """Adaptors trained: every image backbone with every text entry (the rows' and the published protocol's)."""
        return len(PAPER_IMAGE_BACKBONES) * self.text_backbones

    @property
    def adaptor_stacks(self) -> int:
        """Stacks the study trains them in: per image store, its text entries in stacks of `adaptor_stack`."""
        return len(PAPER_IMAGE_BACKBONES) * math.ceil(self.text_backbones / self.adaptor_stack)

    @property
    def segmentation_stores(self) -> int:
        """Stores per backbone and segmentation dataset: the unwarped one and its views, for each protocol (whose
        split is a manifest, and so a store set, of its own)."""
        return self.protocols * (1 + self.segmentation_views)

    def sources(self) -> list[str]:
        """Each input with its value and its origin (measured, and how; or assumed, and on what)."""
        s, b, ae, shared = self.preprocess_ms
        return [
            f"images: {self.mimic_images:,} MIMIC-CXR-JPG 2.0.0 (PhysioNet) + {self.downstream_images:,} downstream "
            "(RSNA, COVIDx, SIIM; issue 14's ~450k radiographs in all); assumed to cost what a MIMIC JPEG costs",
            f"reports: {self.mimic_reports:,} studies with a usable report, through {self.text_backbones} text "
            "entries (BERT, BioBERT, ClinicalBERT, PubMedBERT, CXR-BERT, and CXR-BERT through the untrained pooler "
            "the published code read: the published protocol's CXR-BERT row, studies/paper.toml); "
            f"{self.adaptors} Adaptors = 3 image backbones x {self.text_backbones} text entries, "
            f"{self.adaptor_rows} of them read by each protocol's heads",
            f"node: {self.cores} cores, {self.cores - 1} decoding (one feeds the GPU), {self.thread_scaling:g} of "
            "linear scaling (assumed, BENCHMARKS 'Scale on paper')",
            f"decode of a full-resolution 1.39 MB JPEG: {self.decode_ms:g} ms per core, x{self.jpeg_bytes_factor:.2f} "
            "for MIMIC's 1.51 MB mean (measured: bench.preprocess; entropy decoding scales with bytes)",
            f"preprocessing at full resolution, ms per core: dinov2-s {s:g}, dinov2-b {b:g}, resnet-ae {ae:g}, all "
            f"three in one pass {shared:g} (measured: bench.preprocess)",
            f"a 512 px decode + preprocessing costs 1/{self.reduced_speedup:g} of the full-resolution one (measured: "
            "bench.decode_fidelity, side by side on one core; DCT scaling cannot skip the Huffman decoding that "
            "dominates a 1.4 MB radiograph); faithful (embedding cosine >= 0.9999) for DINOv2-S/B, not for "
            "ResNet-AE (measured: bench.decode_fidelity on RG1_UNCI)",
            f"JPEG decoding on the GPU (`--decoder gpu`, nvJPEG through torchvision): {self.gpu_decode_per_s:,.0f} "
            "full-resolution MIMIC-sized JPEGs/s (assumed, about 2 GB/s of JPEG data; `make bench-gpu` measures it "
            "as bench.device_decode), sharing the GPU with the forward passes; preprocessing stays on the cores",
            f"GPU forward, images/s (bf16, batch 256, H100-class): dinov2-s {self.forward[0]:,.0f}, dinov2-b "
            f"{self.forward[1]:,.0f}, resnet-ae {self.forward[2]:,.0f} (assumed: 20-30% of the dense bf16 peak at "
            "11.0, 43.9 and 13.9 GFLOPs per image, counted by torch.utils.flop_counter)",
            f"text: BERT-base at 112 tokens {self.text_forward:,.0f} reports/s on the GPU (assumed), tokenizer "
            f"{self.tokenizer_per_core:,.0f} reports/s per core (measured, BENCHMARKS 'Scale on paper'), in the "
            f"reader's {self.cores - 1} worker processes at {self.thread_scaling:g} of linear scaling, so the feeding "
            "thread only hands tensors over (measured: bench.report_tokens, 10x less of its CPU per report)",
            f"Adaptor, paper recipe: {self.epochs} epochs x {self.steps_per_epoch} steps at batch 1024; the "
            f"{self.adaptors} Adaptors train as {self.adaptor_stacks} stacks of "
            f"{self.adaptor_stack} (one image store, {self.adaptor_stack} text stores), {self.stacked_step_ms:g} ms "
            "per stacked step on the GPU in the exact form (assumed on measured counts, BENCHMARKS 'Stacks across "
            "text encoders': launch-bound, 843 operations x 5 us plus 6 x 0.3 ms copying the batches, against "
            "2 ms for one Adaptor's step; the 6 x 121 GFLOP are 1.8 ms at 40% of an H200's bf16 peak); "
            f"{self.epoch_overhead_s:g} s per epoch (validation, checkpoint) and {self.run_overhead_s:g} s "
            "per run (opening and loading the stores), per Adaptor, stacked or not, both measured on this CPU at "
            "MIMIC-CXR's size (bench.train part 3)",
            f"classification heads: {self.classification_runs_per_adaptor} per Adaptor a protocol reads (RSNA, "
            "COVIDx at 1/10/100%), "
            f"{self.classification_run_s:g} s each on pooled features (assumed)",
            f"segmentation datasets: SIIM's {self.segmentation_images[0]:,} images at {self.segmentation_sizes[0]} px "
            f"and RSNA's {self.segmentation_images[1]:,} at {self.segmentation_sizes[1]} px (the published crop "
            "sizes; images counted in torchxrayvision's SIIM and RSNA tables), each in "
            f"{self.segmentation_stores} stores per backbone: the unwarped one and {self.segmentation_views} "
            f"augmented views (studies/paper.toml), for each of {self.protocols} protocols (each splits the dataset "
            "into a manifest, and so a store set, of its own)",
            f"DINOv2 segmentation tokens: {self.token_mb[0][0]:g} / {self.token_mb[0][1]:g} MB per image (S / B) at "
            f"{self.segmentation_sizes[0]} px, {self.token_mb[1][0]:g} / {self.token_mb[1][1]:g} MB at "
            f"{self.segmentation_sizes[1]} px (measured: bench.segmentation_input); the GPU forward at 896 px "
            f"{self.vit_896_cost:g}x the 224 px cost (assumed: 16x the tokens, and attention over 4,096 of them)",
            f"segmentation heads: the published decoder on DINOv2 tokens, {self.decoder_gflop[0]:g} and "
            f"{self.decoder_gflop[1]:g} GFLOP per sample and step at {self.segmentation_sizes[0]} and "
            f"{self.segmentation_sizes[1]} px (measured: bench.segmentation_input, flop counter); SIIM and RSNA "
            f"with {self.segmentation_train_images[0]:,} and {self.segmentation_train_images[1]:,} training "
            f"images (assumed: 70% of each), 1+10+100% of them, at most {self.segmentation_epochs} epochs (the "
            f"protocols' most; early stopping usually ends sooner), {self.segmentation_head_sets} sets per image "
            "backbone and dataset (5 Adaptors and the raw baseline, x 1 published + 3 corrected seeds), "
            f"{self.segmentation_tflops:g} TFLOP/s effective (assumed)",
            f"ResNet-AE feature maps (`extract images --feature-maps`) at the same sizes: "
            f"{self.feature_map_mib[0]:g} and {self.feature_map_mib[1]:g} MiB stored "
            f"per image, {self.feature_map_write_s[0]:g} and {self.feature_map_write_s[1]:g} s per image to compress "
            "and write on one core (measured: bench.feature_maps, seeded ResNet-AE-101 weights, this 2-core CPU); "
            "the GPU forward at 896 px assumed 16x the 224 px cost",
            f"ResNet-AE U-Net heads: {self.unet_gflop[0]:g} and {self.unet_gflop[1]:g} GFLOP per image forward "
            "(measured: bench.feature_maps, flop counter), a training step 3x that (assumed), on the segmentation "
            "heads' training images, fractions, epochs, sets and TFLOP/s above",
        ]


@dataclass(frozen=True)
class Row:
    """One stage of the study: what it does, how fast, what bounds it, how long."""

    stage: str
    work: str
    rate: str
    bound: str
    seconds: float


def image_rows(inputs: Inputs) -> tuple[list[Row], list[Row]]:
    """The three single passes at full resolution, and the study's images in each decoding configuration."""
    images = inputs.mimic_images + inputs.downstream_images
    decoders = (inputs.cores - 1) * inputs.thread_scaling
    decode_ms = inputs.decode_ms * inputs.jpeg_bytes_factor

    def reader(preprocess_ms: float, speedup: float = 1.0) -> float:
        return decoders * 1e3 * speedup / (decode_ms + preprocess_ms)

    def row(stage: str, reader_rate: float, forward: float, reader_bound: str = "decode + preprocess") -> Row:
        rate = min(reader_rate, forward)
        return Row(stage, f"{images:,} images", f"reader {reader_rate:,.0f}/s, forward {forward:,.0f}/s",
                   reader_bound if reader_rate < forward else "GPU forward", images / rate)

    singles = [row(f"images, {name} alone", reader(inputs.preprocess_ms[k]), inputs.forward[k])
               for k, name in enumerate(PAPER_IMAGE_BACKBONES)]
    all_three, dinov2 = _serial(inputs.forward), _serial(inputs.forward[:2])
    exact = row("images, exact: all three in one pass at full resolution", reader(inputs.preprocess_ms[3]),
                all_three)
    dinov2_pass = row("", reader(inputs.preprocess_ms[3], inputs.reduced_speedup), dinov2)
    split = Row("images, split: dinov2-s + dinov2-b in one pass at 512 px (their auto), then resnet-ae alone at "
                "full resolution",
               f"{images:,} images, twice", f"{dinov2_pass.rate}; then {singles[2].rate}",
               f"{dinov2_pass.bound}, then {singles[2].bound}", dinov2_pass.seconds + singles[2].seconds)
    fast = row("images, fast: all three in one pass at 512 px (resnet-ae below the fidelity bound)",
               reader(inputs.preprocess_ms[3], inputs.reduced_speedup), all_three)
    preprocessing = decoders * 1e3 / inputs.preprocess_ms[3]
    gpu_share = _serial((inputs.gpu_decode_per_s, all_three))
    gpu = Row("images, GPU decode: all three in one pass at full resolution, JPEGs decoded by nvJPEG",
              f"{images:,} images", f"cores preprocessing {preprocessing:,.0f}/s, GPU decode + forward "
              f"{gpu_share:,.0f}/s", "preprocess on the cores" if preprocessing < gpu_share else "GPU decode + forward",
              images / min(preprocessing, gpu_share))
    return singles, [exact, split, fast, gpu]


def _serial(rates: tuple[float, ...]) -> float:
    """Images/s of several stages one after the other on one device (each image through all of them)."""
    return 1.0 / sum(1.0 / rate for rate in rates)


def later_rows(inputs: Inputs) -> list[Row]:
    """Texts, Adaptors and heads: the same whichever way the images were extracted."""
    tokenizers = (inputs.cores - 1) * inputs.thread_scaling * inputs.tokenizer_per_core
    text_rate = min(inputs.text_forward, tokenizers)
    stacks = inputs.adaptor_stacks
    steps = inputs.epochs * inputs.steps_per_epoch
    adaptor_seconds = (stacks * steps * inputs.stacked_step_ms / 1e3
                       + inputs.adaptors * (inputs.epochs * inputs.epoch_overhead_s + inputs.run_overhead_s))
    classification_runs = inputs.adaptor_rows * inputs.classification_runs_per_adaptor
    decoder_set = _head_set_seconds(inputs, inputs.decoder_gflop)
    unet_set = _head_set_seconds(inputs, tuple(3 * gflop for gflop in inputs.unet_gflop))
    sets = inputs.segmentation_head_sets
    return [
        Row("texts, tokenised in worker processes", f"{inputs.text_backbones} x {inputs.mimic_reports:,} reports",
            f"forward {inputs.text_forward:,.0f}/s, tokenizers {tokenizers:,.0f}/s",
            "GPU forward" if inputs.text_forward <= tokenizers else "tokenizers",
            inputs.text_backbones * inputs.mimic_reports / text_rate),
        Row("Adaptors, stacked across text encoders", f"{stacks} stacks x {steps:,} steps",
            f"{inputs.stacked_step_ms:g} ms per stacked step, {inputs.epoch_overhead_s:g} s per Adaptor and epoch",
            "per-Adaptor epochs" if inputs.adaptors * inputs.epoch_overhead_s > stacks * inputs.steps_per_epoch
            * inputs.stacked_step_ms / 1e3 else "stacked steps", adaptor_seconds),
        Row("classification heads", f"{classification_runs} runs", f"{inputs.classification_run_s:g} s per run",
            "assumed", classification_runs * inputs.classification_run_s),
        token_store_row(inputs),
        Row("segmentation heads", f"2 DINOv2 backbones x 2 datasets x {sets} sets x 1/10/100%",
            f"{_duration(decoder_set)} per backbone and set", "decoder steps", 2 * sets * decoder_set),
        feature_map_row(inputs),
        Row("ResNet-AE U-Net heads", f"2 datasets x {sets} sets x 1/10/100%",
            f"{_duration(unet_set)} per set", "decoder steps", sets * unet_set),
    ]


def _head_set_seconds(inputs: Inputs, gflop_per_step: tuple[float, float]) -> float:
    """One set of segmentation heads (1, 10 and 100% of SIIM's and RSNA's training images) of one backbone."""
    fraction_sum = 0.01 + 0.10 + 1.00
    return sum(images * fraction_sum * inputs.segmentation_epochs * gflop for images, gflop
               in zip(inputs.segmentation_train_images, gflop_per_step)) / (inputs.segmentation_tflops * 1e3)


def token_store_row(inputs: Inputs) -> Row:
    """The DINOv2 segmentation stores: each image, each view, each protocol, through both backbones at its size."""
    seconds = 0.0
    for images, size in zip(inputs.segmentation_images, inputs.segmentation_sizes):
        cost = inputs.vit_896_cost if size == 896 else (size / 224) ** 2
        seconds += images * inputs.segmentation_stores * _serial(inputs.forward[:2]) ** -1 * cost
    return Row("DINOv2 segmentation stores", f"{sum(inputs.segmentation_images):,} images x "
               f"{inputs.segmentation_stores} stores, {token_gb(inputs):,.0f} GB",
               f"forward {inputs.forward[0]:,.0f} / {inputs.forward[1]:,.0f} images/s at 224 px", "GPU forward",
               seconds)


def token_gb(inputs: Inputs) -> float:
    """Disk the DINOv2-S and -B segmentation stores take, SIIM and RSNA, every view and protocol."""
    return sum(images * sum(mb) for images, mb in zip(inputs.segmentation_images, inputs.token_mb)) \
        * inputs.segmentation_stores / 1e3


GOAL_MINUTES = 60
"""Issue 22: the whole study in under an hour on one 16-core GPU node."""

SEGMENTATION_STAGES = ("DINOv2 segmentation stores", "segmentation heads", "ResNet-AE feature maps",
                       "ResNet-AE U-Net heads")
"""The stages of the segmentation tasks as the paper ran them (issue 20: the published decoders at the published
sizes, augmented views, the ResNet-AE rows): issue 22's goal was set before they existed, so the study's total
is also shown without them."""


def feature_map_row(inputs: Inputs) -> Row:
    """The ResNet-AE stores with feature maps: a forward at each published crop size, compression on the CPU, for
    each view and protocol."""
    compressors = (inputs.cores - 1) * inputs.thread_scaling
    seconds = 0.0
    for images, size, write_s in zip(inputs.segmentation_images, inputs.segmentation_sizes,
                                     inputs.feature_map_write_s):
        forward = inputs.forward[PAPER_IMAGE_BACKBONES.index("resnet-ae")] / (size / 224) ** 2
        seconds += images * inputs.segmentation_stores / min(forward, compressors / write_s)
    return Row("ResNet-AE feature maps", f"{sum(inputs.segmentation_images):,} images x "
               f"{inputs.segmentation_stores} stores, {feature_map_gib(inputs):,.0f} GiB",
               f"compress {compressors / max(inputs.feature_map_write_s):,.0f}-"
               f"{compressors / min(inputs.feature_map_write_s):,.0f} images/s", "compression + GPU forward", seconds)


def feature_map_gib(inputs: Inputs) -> float:
    """Disk the ResNet-AE feature maps take, SIIM and RSNA together, every view and protocol."""
    return sum(images * mib for images, mib in zip(inputs.segmentation_images, inputs.feature_map_mib)) \
        * inputs.segmentation_stores / 1024


def table(inputs: Inputs) -> list[str]:
    """The projection as Markdown: the stages, the study per decoding configuration, the inputs."""
    singles, configurations = image_rows(inputs)
    rest = later_rows(inputs)
    lines = ["| stage | work | rate | bound | time |", "|---|---|---|---|---|"]
    for row in [*singles, *configurations, *rest]:
        lines.append(f"| {row.stage} | {row.work} | {row.rate} | {row.bound} | {_duration(row.seconds)} |")
    after = sum(row.seconds for row in rest)
    segmentation = sum(row.seconds for row in rest if row.stage in SEGMENTATION_STAGES)
    lines += ["", f"| study, images decoded | images | everything else | **total** | under {GOAL_MINUTES} min "
                  "| total without the segmentation rows |", "|---|---|---|---|---|---|"]
    for row in configurations:
        total = row.seconds + after
        lines.append(f"| {row.stage.removeprefix('images, ')} | {_duration(row.seconds)} | {_duration(after)} | "
                     f"**{_duration(total)}** | {'yes' if total < GOAL_MINUTES * 60 else 'no'} "
                     f"| {_duration(total - segmentation)} |")
    three = sum(row.seconds for row in singles)
    lines += [
        "",
        f"One pass over the images is {three / configurations[0].seconds:.2f}x the three single passes "
        f"({_duration(three + after)} for the study with three).",
        f"Disk for segmentation: the DINOv2 stores take {token_gb(inputs):,.0f} GB and the ResNet-AE feature maps "
        f"{feature_map_gib(inputs):,.0f} GiB ({inputs.segmentation_stores} stores each: {inputs.protocols} protocols "
        f"x (1 + {inputs.segmentation_views} views)), beside the embedding stores.",
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
    stacked_step_ms: float | None = typer.Option(None, "--stacked-step-ms", min=0.01, help="One step of a stack "
                                                 "of 6 Adaptors at batch 1024 on the GPU, ms (bench.sweep --device "
                                                 "cuda)."),
    reduced_speedup: float | None = typer.Option(None, "--reduced-speedup", min=0.1, help="Full-resolution / 512 px "
                                                 "decode + preprocessing on one core (bench.decode_fidelity)."),
    gpu_decode_per_s: float | None = typer.Option(None, "--gpu-decode-per-s", min=1, help="Full-resolution JPEGs/s "
                                                  "decoded on the GPU (bench.device_decode --device cuda)."),
    segmentation_views: int | None = typer.Option(None, "--segmentation-views", min=0, help="Augmented views per "
                                                  "segmentation image [default: 2, studies/paper.toml]."),
    segmentation_tflops: float | None = typer.Option(None, "--segmentation-tflops", min=0.1, help="Effective "
                                                     "TFLOP/s of the segmentation decoders' training [default: 20]."),
) -> None:
    """Print the projection of the paper's study on one GPU node as a Markdown table with its inputs."""
    chosen = {"cores": cores, "decode_ms": decode_ms, "stacked_step_ms": stacked_step_ms,
              "reduced_speedup": reduced_speedup, "gpu_decode_per_s": gpu_decode_per_s,
              "segmentation_views": segmentation_views, "segmentation_tflops": segmentation_tflops,
              "preprocess_ms": None if preprocess_ms is None else _floats(preprocess_ms, 4, "--preprocess-ms"),
              "forward": None if forward is None else _floats(forward, 3, "--forward")}
    inputs = dataclasses.replace(Inputs(), **{name: value for name, value in chosen.items() if value is not None})
    for line in table(inputs):
        typer.echo(line)


if __name__ == "__main__":
    app()
