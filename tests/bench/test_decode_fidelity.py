"""Reduced-scale decoding is the default only where it is measured faithful: the bound on a real radiograph."""
import pytest
from typer.testing import CliRunner

from adaptor_vlp.extract.backbones import Modality, load_registry
from adaptor_vlp.extract.image_transforms import DecodeSize, decode_size
from bench import decode_fidelity
from bench.decode_fidelity import COSINE_BOUND, fidelity, radiograph_jpeg, sensitive_encoder, yardstick


def reduced_by_measurement() -> list[str]:
    """Built-in entries whose `auto` decode is reduced because the registry states a measured decode size."""
    return sorted(entry.spec.name for entry in load_registry().entries()
                  if entry.spec.modality is Modality.IMAGE and entry.spec.image.decode_size is not None)


def test_the_paper_dinov2_entries_decode_reduced_by_default_and_resnet_ae_at_full_resolution() -> None:
    assert reduced_by_measurement() == ["dinov2-b", "dinov2-s"]
    assert "resnet-ae" not in reduced_by_measurement()


@pytest.mark.slow
@pytest.mark.parametrize("name", reduced_by_measurement())
def test_the_default_reduced_decode_keeps_the_embedding_within_the_bound_on_the_real_radiograph(name, tmp_path) -> None:
    encoder = sensitive_encoder(name)
    jpeg = radiograph_jpeg(tmp_path)
    assert yardstick(encoder, jpeg) < 0.999, "the weights tell a radiograph moved by 1% of its height apart"
    (result,) = fidelity(encoder, jpeg, [DecodeSize(decode_size(encoder.spec))])
    assert result.cosine >= COSINE_BOUND, result.line()
    assert result.mean_grey_difference < 1.0, result.line()


@pytest.mark.slow
def test_resnet_ae_stays_at_full_resolution_because_a_reduced_decode_breaks_the_bound(tmp_path) -> None:
    (result,) = fidelity(sensitive_encoder("resnet-ae"), radiograph_jpeg(tmp_path), [DecodeSize(512)])
    assert result.cosine < COSINE_BOUND, result.line()


def test_the_benchmark_prints_fidelity_and_the_cost_ratio_per_size() -> None:
    result = CliRunner().invoke(decode_fidelity.app, ["--quick"])
    assert result.exit_code == 0, result.output
    assert "tiny-vit at 256 px (shorter side): largest |difference|" in result.output
    assert "ratio full/256 px decode + preprocessing: " in result.output
    assert "all backbones at 256 px: worst cosine" in result.output
