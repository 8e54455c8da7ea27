"""The paper's ResNet-AE: torchxrayvision's architecture, its weights file where xrv keeps it, never downloaded."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import CacheStore, Modality, store_path
from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.cli import app
from adaptor_vlp.extract.encoders import load_image_encoder
from adaptor_vlp.extract.image_transforms import preprocess
from adaptor_vlp.extract.weights import IncompatibleWeights, MissingWeights, weights_available, weights_sha256
from adaptor_vlp.train.model import Adaptor, AdaptorConfig, count_trainable_parameters

from .published_layouts import save_xrv_autoencoder, xrv_weights_file


@pytest.fixture(scope="module")
def xrv_home(tmp_path_factory):
    """A HOME whose ~/.torchxrayvision/models_data holds seeded ResNet-AE weights, and the model itself."""
    home = tmp_path_factory.mktemp("home")
    return home, save_xrv_autoencoder(home, seed=5).eval()


@pytest.fixture
def home(xrv_home, monkeypatch):
    monkeypatch.setenv("HOME", str(xrv_home[0]))
    return xrv_home


def test_resnet_ae_embeds_the_averaged_code_and_its_3x3_tokens(home):
    _, reference = home
    encoder = load_image_encoder("resnet-ae")
    pixels = torch.randn(2, 1, 224, 224, generator=torch.Generator().manual_seed(0)) * 500

    output = encoder.encode(pixels, with_tokens=True)

    with torch.no_grad():
        code = reference.encode(pixels)
    assert code.shape == (2, 512, 3, 3)
    torch.testing.assert_close(output.pooled, code.mean(dim=(2, 3)))
    torch.testing.assert_close(output.tokens, code.flatten(2).transpose(1, 2))
    assert encoder.token_count == 9 and encoder.dim == 512
    assert encoder.weights_sha256 == weights_sha256(torch.nn.ModuleDict({"autoencoder": reference}))
    assert weights_available(get_spec("resnet-ae"))


@pytest.mark.slow
def test_resnet_ae_feature_maps_are_the_published_unets_blocks_1_to_4(home):
    _, reference = home
    encoder = load_image_encoder("resnet-ae")
    pixels = torch.randn(1, 1, 224, 224, generator=torch.Generator().manual_seed(1)) * 500

    output = encoder.encode(pixels, with_feature_maps=True)

    blocks = list(reference.children())[:8]  # models/seg_models.py:48-53, as the published U-Net cuts them
    with torch.no_grad():
        block1 = torch.nn.Sequential(*blocks[:3])(pixels)
        block2 = torch.nn.Sequential(*blocks[3:5])(block1)
        block3 = blocks[5](block2)
        block4 = blocks[6](block3)
        code = reference.encode(pixels)
    for got, want in zip(output.feature_maps, (block1, block2, block3, block4)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(output.pooled, code.mean(dim=(2, 3)))
    assert encoder.feature_map_shapes() == ((64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14))


def test_resnet_ae_takes_one_channel_in_torchxrayvisions_range(home):
    encoder = load_image_encoder("resnet-ae")
    pixels = preprocess(np.full((300, 250), 255, dtype=np.uint8), encoder.spec)

    assert pixels.shape == (1, 224, 224)
    assert pixels.max().item() == pytest.approx(1024.0) and pixels.min().item() == pytest.approx(-1024.0)
    with pytest.raises(ValueError, match=r"\(B, 1, 224, 224\)"):
        encoder.encode(torch.zeros(1, 3, 224, 224))


def test_missing_weights_say_in_one_line_where_to_put_the_file_and_which_url_xrv_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))

    with pytest.raises(MissingWeights) as raised:
        load_image_encoder("resnet-ae")

    message = str(raised.value)
    assert "\n" not in message
    assert str(xrv_weights_file(tmp_path)) in message
    assert "https://github.com/mlmed/torchxrayvision/releases/download/v1/" \
           "nihpcrsnamimic_ch-resnet101-2-ae-test2-elastic-e250.pt" in message
    assert "--weights FILE" in message
    assert not xrv_weights_file(tmp_path).exists(), "nothing was downloaded"


def test_weights_from_a_file_elsewhere_and_a_file_that_does_not_fit(home, tmp_path, monkeypatch):
    moved = tmp_path / "ae.pt"
    moved.write_bytes(xrv_weights_file(home[0]).read_bytes())
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))

    assert load_image_encoder("resnet-ae", weights=moved).weights_sha256 == load_image_encoder(
        "resnet-ae", weights=xrv_weights_file(home[0])).weights_sha256
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(IncompatibleWeights, match="wrong.pt does not load into torchxrayvision's ResNetAE101"):
        load_image_encoder("resnet-ae", weights=wrong)


def test_the_papers_adaptor_on_resnet_ae_has_12_011_009_trainable_parameters(home):
    dims = load_image_encoder("resnet-ae").dim, get_spec("bert").dim

    assert count_trainable_parameters(Adaptor(AdaptorConfig(image_dim=dims[0], text_dim=dims[1]))) == 12_011_009


@pytest.mark.slow
def test_adaptor_extract_images_runs_resnet_ae_from_its_cache_folder(home, tiny_dataset):
    cache, _ = tiny_dataset

    result = CliRunner().invoke(app, ["images", "--cache", str(cache), "--dataset", "tiny", "--backbone", "resnet-ae",
                                      "--tokens", "--workers", "0", "--batch-size", "4"])

    assert result.exit_code == 0, result.output
    store = CacheStore.open(store_path(cache, "tiny", Modality.IMAGE, "resnet-ae"))
    provenance = store.provenance
    assert provenance.weights_id == "101-elastic" and provenance.preprocessing["source"] == "torchxrayvision"
    assert provenance.preprocessing["grayscale"] == "one channel"
    embedding = store.read("embedding")
    tokens = store.read("tokens")
    valid = store.read("valid")
    assert embedding.shape == (12, 512) and tokens.shape == (12, 9, 512)
    np.testing.assert_allclose(embedding[valid], tokens[valid].astype(np.float32).mean(axis=1), rtol=2e-2, atol=2e-2)


def _resnet_ae_at(size: int):
    import dataclasses

    from adaptor_vlp.extract.backbone_spec import ImageStep, Interpolation, StepOp

    spec = get_spec("resnet-ae")
    steps = (*spec.image.steps[:-1], ImageStep(StepOp.RESIZE, size, Interpolation.AREA, rounded=False))
    return dataclasses.replace(spec, image=dataclasses.replace(spec.image, steps=steps), random_init_seed=3)


def test_resnet_ae_builds_at_the_published_unets_crop_sizes_and_no_other():
    from adaptor_vlp.extract.xrv_autoencoder import build_autoencoder

    assert _resnet_ae_at(896).image_size == 896
    assert isinstance(build_autoencoder(_resnet_ae_at(896), None), torch.nn.Module)
    with pytest.raises(IncompatibleWeights, match="weights are for 224 px .* also ran them at 448, 896"):
        build_autoencoder(_resnet_ae_at(320), None)
