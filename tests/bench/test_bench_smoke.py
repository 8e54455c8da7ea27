"""Smoke runs of the benchmarks at --quick sizes: each finishes and prints every ratio it promises."""
import re

from typer.testing import CliRunner

from bench import cache_formats, dask_extract, extract, multi_extract, preprocess, projection

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


def test_the_projection_prints_every_stage_both_totals_and_its_inputs() -> None:
    result = CliRunner().invoke(projection.app, ["--forward", "8000,4000,4000", "--adaptor-step-ms", "4"])
    assert result.exit_code == 0, result.output
    stages = [line.split(" | ")[0].lstrip("| ") for line in result.output.splitlines() if line.startswith("| ")]
    assert stages[1:] == ["images, dinov2-s alone", "images, dinov2-b alone", "images, resnet-ae alone",
                          "images, all three in one pass", "texts", "Adaptors", "classification heads",
                          "segmentation heads", "ResNet-AE feature maps", "ResNet-AE U-Net heads",
                          "**study, images in three single passes**",
                          "**study, images in one pass**"]
    assert "forward 8,000/s" in result.output and "4 ms per step" in result.output
    assert "One pass over the images is " in result.output
    assert "Disk: the ResNet-AE feature maps take 521 GiB" in result.output
    refused = CliRunner().invoke(projection.app, ["--forward", "8000,4000"])
    assert refused.exit_code == 2 and "give 3 positive numbers" in refused.output
