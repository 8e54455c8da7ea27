"""Smoke runs of the benchmarks at --quick sizes: each finishes and prints every ratio it promises."""
import re

import pytest
from typer.testing import CliRunner

from bench import cache_formats, dask_extract, extract, multi_extract, preprocess, projection, report_tokens

RATIO_LINE = re.compile(r"^ratio (?P<name>.+?): (?P<value>\d+\.\d+)x?( \(goal (>=|<=) [\d.]+x?: (met|MISSED)\))?$")


def _ratios(output: str) -> dict[str, float]:
    """Every `ratio NAME: VALUE` line, by name; a malformed ratio line fails the test."""
    ratios = {}
    for line in output.splitlines():
        if line.startswith("ratio "):
            match = RATIO_LINE.match(line)
            assert match, f"malformed ratio line: {line!r}"
            ratios[match["name"]] = float(match["value"])
    return ratios


def _run(app, *args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    assert "command: python -m bench." in result.output and "machine: " in result.output
    return result.output


@pytest.mark.slow
def test_extract_benchmark_prints_pipeline_bounds_and_draft_speedup() -> None:
    ratios = _ratios(_run(extract.app, "--quick"))
    bound = {name for name in ratios if name.startswith("pipeline/bound")}
    assert bound in ({"pipeline/bound, the forward"}, {"pipeline/bound, the decode"}), ratios
    assert set(ratios) - bound == {
        "pipeline/forward", "pipeline/decode", "pipeline end to end/forward", "JPEG draft decode speed-up",
    }
    assert all(value > 0 for value in ratios.values())


def test_extract_benchmark_refuses_a_run_without_a_steady_state() -> None:
    result = CliRunner().invoke(extract.app, ["--quick", "--images", "16", "--batch-size", "4"])
    assert result.exit_code == 2
    assert "--images" in result.output


def test_cache_formats_benchmark_prints_size_and_read_ratios() -> None:
    output = _run(cache_formats.app, "--quick")
    ratios = _ratios(output)
    assert {name.split(" (")[0] for name in ratios} == {
        "store full read / fastest",
        "store bytes / published float32 npy bytes",
        "store read throughput / raw read of its shard files",
        "marker checksums / store write",
        "verify on read / store full read",
    }
    assert all(value > 0 for value in ratios.values())
    assert "preadv calls for" in output
    for contender in ("store (zarr v3 f16)", "npy per split (f32)", "hdf5 (f16)", "hdf5 (f32)",
                      "hdf5 (f16, shuffle+gzip)"):
        assert any(line.startswith(contender) for line in output.splitlines()), contender


@pytest.mark.slow
def test_dask_extract_benchmark_prints_the_decoder_ratios() -> None:
    ratios = _ratios(_run(dask_extract.app, "--quick"))
    assert set(ratios) == {"dask decoder threads/one process", "dask decoder threads/dask no decoders"}
    assert all(value > 0 for value in ratios.values())


def test_multi_extract_benchmark_refuses_an_unknown_backbone_before_drawing_images() -> None:
    result = CliRunner().invoke(multi_extract.app, ["--quick", "--backbones", "tiny-vit,nope"])
    assert result.exit_code == 2 and "unknown backbone 'nope'" in result.output


def test_preprocess_benchmark_prints_the_shared_and_block_sum_ratios() -> None:
    output = _run(preprocess.app, "--quick")
    assert set(_ratios(output)) == {"preprocess_each/each in turn", "area resize, block sums/cumulative sums"}
    assert "decode at full resolution: " in output and "one core reads " in output


def test_the_projection_prints_every_stage_the_study_per_decoding_configuration_and_its_inputs() -> None:
    result = CliRunner().invoke(projection.app, ["--forward", "8000,4000,4000", "--stacked-step-ms", "4"])
    assert result.exit_code == 0, result.output
    stages = [line.split(" | ")[0].lstrip("| ") for line in result.output.splitlines() if line.startswith("| ")]
    configurations = ["exact: all three in one pass at full resolution",
                      "split: dinov2-s + dinov2-b in one pass at 512 px (their auto), then resnet-ae alone at full "
                      "resolution", "fast: all three in one pass at 512 px (resnet-ae below the fidelity bound)",
                      "GPU decode: all three in one pass at full resolution, JPEGs decoded by nvJPEG"]
    assert stages[1:] == ["images, dinov2-s alone", "images, dinov2-b alone", "images, resnet-ae alone",
                          *(f"images, {name}" for name in configurations), "texts, tokenised in worker processes",
                          "Adaptors, stacked across text encoders", "classification heads",
                          "DINOv2 segmentation stores", "segmentation heads", "ResNet-AE feature maps",
                          "ResNet-AE U-Net heads", "study, images decoded", *configurations]
    assert "forward 8,000/s" in result.output and "4 ms per stacked step" in result.output
    assert "One pass over the images is " in result.output
    # 521 GiB of maps for one store set (SIIM at 896 px, RSNA at 224): 2 protocols x (1 + 2 views) of them
    assert "the ResNet-AE feature maps 3,124 GiB (6 stores each: 2 protocols x (1 + 2 views))" in result.output
    unwarped = CliRunner().invoke(projection.app, ["--segmentation-views", "0", "--segmentation-tflops", "40"])
    assert "the ResNet-AE feature maps 1,041 GiB (2 stores each" in unwarped.output
    assert "40 TFLOP/s effective" in unwarped.output
    faster = CliRunner().invoke(projection.app, ["--gpu-decode-per-s", "3000", "--reduced-speedup", "3"])
    assert faster.exit_code == 0 and "3,000 full-resolution MIMIC-sized JPEGs/s" in faster.output
    refused = CliRunner().invoke(projection.app, ["--forward", "8000,4000"])
    assert refused.exit_code == 2 and "give 3 positive numbers" in refused.output


def test_the_tokenisation_benchmark_prints_both_ratios_on_real_reports() -> None:
    output = _run(report_tokens.app, "--quick")
    assert "128 Indiana University reports" in output
    assert set(_ratios(output)) == {"worker processes/in series, texts/s delivered",
                                    "in series/worker processes, feeding thread's CPU per text"}
