"""`extract images --feature-maps`: a CNN's four intermediate maps stored beside its pooled embedding."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ArrayName, CacheStore, Modality, store_path
from adaptor_vlp.cache_schema.layout import FEATURE_MAP_ARRAYS
from adaptor_vlp.extract.cli import app
from adaptor_vlp.extract.encoders import load_image_encoder

from .conftest import CORRUPT_ROW, MISSING_ROW


@pytest.mark.slow
def test_the_stored_maps_are_the_stages_of_the_backbone_and_recorded(tiny_dataset) -> None:
    cache, _ = tiny_dataset
    result = CliRunner().invoke(app, ["images", "--backbone", "tiny-resnet", "--dataset", "tiny", "--cache",
                                      str(cache), "--feature-maps", "--workers", "0", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    store = CacheStore.open(store_path(cache, "tiny", Modality.IMAGE, "tiny-resnet"))
    levels = ((32, 32, 32), (32, 16, 16), (48, 8, 8), (192, 4, 4))
    assert store.features.feature_maps == levels
    record = store.provenance.preprocessing["feature_maps"]
    assert record["levels"] == [list(level) for level in levels] and record["reductions"] == [2, 4, 8, 16]
    assert record["codec"]["cname"] == "zstd"

    network = load_image_encoder("tiny-resnet").model.network
    maps = [torch.from_numpy(store.read(name).astype(np.float32)) for name in FEATURE_MAP_ARRAYS]
    valid = torch.from_numpy(store.valid)
    with torch.no_grad():  # each stored level is the next stage's input: the maps are the backbone's own stages
        np.testing.assert_allclose(
            network.layer1(network.maxpool(maps[0][valid])), maps[1][valid], atol=0.02, rtol=0.02
        )
        np.testing.assert_allclose(network.layer3(maps[2][valid]), maps[3][valid], atol=0.02, rtol=0.02)
        pooled = network.layer4(maps[3][valid]).mean(dim=(2, 3))
    np.testing.assert_allclose(pooled, store.read(ArrayName.EMBEDDING)[store.valid].astype(np.float32),
                               atol=0.02, rtol=0.02)
    level_1 = store.read(ArrayName.FEATURE_MAP_1)
    assert np.isnan(level_1[MISSING_ROW]).all() and np.isnan(level_1[CORRUPT_ROW]).all()


def test_the_encoder_returns_the_timm_stages_with_its_pooled_embedding() -> None:
    encoder = load_image_encoder("tiny-resnet")
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    output = encoder.encode(pixels, with_tokens=True, with_feature_maps=True)
    with torch.no_grad():
        final, stages = encoder.model.network.forward_intermediates(pixels, indices=5)
    for got, want in zip(output.feature_maps, stages):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(output.pooled, encoder.encode(pixels).pooled)
    torch.testing.assert_close(output.tokens, final.flatten(2).transpose(1, 2))
    assert encoder.feature_map_shapes() == ((32, 32, 32), (32, 16, 16), (48, 8, 8), (192, 4, 4))


def test_a_backbone_without_intermediate_maps_is_refused_in_one_line(tiny_dataset) -> None:
    cache, _ = tiny_dataset
    result = CliRunner().invoke(app, ["images", "--backbone", "tiny-vit", "--dataset", "tiny", "--cache",
                                      str(cache), "--feature-maps", "--workers", "0"])
    assert result.exit_code == 2
    assert "has no intermediate maps" in result.output and "without --feature-maps" in result.output
