"""Hugging Face models as frozen towers, in their published layout: vision models, two-tower SigLIP,
CXR-BERT without remote code, and checkpoints that lack what their pooling needs."""
import json

import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BitImageProcessor,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import CacheStore, Modality, store_path
from adaptor_vlp.extract.backbones import Pooling, SpecError, get_spec
from adaptor_vlp.extract.cli import app
from adaptor_vlp.extract.encoders import load_image_encoder, load_text_encoder
from adaptor_vlp.extract.image_transforms import preprocess
from adaptor_vlp.extract.images import read_grayscale
from adaptor_vlp.extract.weights import IncompatibleWeights, locate_weights

from .published_layouts import save_transformers_model

REPORTS = ["Small left pleural effusion.", "No acute cardiopulmonary process.", "Mild cardiomegaly."]
TINY_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28,
                   patch_size=14)


def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(locate_weights(get_spec("minilm")))


def tiny_dinov2(cache, repo_id="test-org/tiny-dinov2", registers=0):
    torch.manual_seed(0)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY_VISION, num_register_tokens=registers))
    else:
        model = Dinov2Model(Dinov2Config(**TINY_VISION))
    processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}, resample=3,
                                  image_mean=[0.5307] * 3, image_std=[0.2583] * 3)
    save_transformers_model(cache, repo_id, model, processor)
    return model.eval(), processor


def tiny_siglip(cache, repo_id="test-org/tiny-siglip"):
    torch.manual_seed(1)
    config = SiglipConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=30522, max_position_embeddings=16),
        vision_config=dict(TINY_VISION, num_hidden_layers=1),
    )
    model = SiglipModel(config)
    processor = SiglipImageProcessor(size={"height": 28, "width": 28}, resample=3)
    save_transformers_model(cache, repo_id, model, processor, minilm_tokenizer())
    return model.eval(), processor


def test_an_hf_vision_model_is_named_directly_and_configured_from_its_own_files(hub_cache):
    tiny_dinov2(hub_cache)

    spec = get_spec("hf:test-org/tiny-dinov2", modality=Modality.IMAGE)

    assert (spec.dim, spec.image_size, spec.pooling, spec.model_id) == (32, 28, Pooling.CLS, "test-org/tiny-dinov2")
    assert spec.image.mean == (0.5307,) * 3 and spec.image.steps[0].size == 32
    assert "preprocessor_config.json" in spec.notes


def test_dinov2_pools_the_class_token_and_keeps_patch_tokens_only(hub_cache):
    model, _ = tiny_dinov2(hub_cache)
    encoder = load_image_encoder("hf:test-org/tiny-dinov2")
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))

    output = encoder.encode(pixels, with_tokens=True)

    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(output.pooled, hidden[:, 0])
    torch.testing.assert_close(output.tokens, hidden[:, 1:])
    assert encoder.token_count == 4


def test_register_tokens_are_not_patch_tokens(hub_cache):
    model, _ = tiny_dinov2(hub_cache, "test-org/tiny-dinov2-reg", registers=3)
    encoder = load_image_encoder("hf:test-org/tiny-dinov2-reg")
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(1))

    output = encoder.encode(pixels, with_tokens=True)

    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    assert hidden.shape[1] == 1 + 3 + 4 and encoder.token_count == 4
    torch.testing.assert_close(output.tokens, hidden[:, 4:])


def test_our_preprocessing_and_the_models_own_processor_embed_the_real_radiograph_alike(hub_cache):
    model, processor = tiny_dinov2(hub_cache)
    gray = read_grayscale(get_testdata_file("RG1_UNCI.dcm"))
    encoder = load_image_encoder("hf:test-org/tiny-dinov2")

    ours = preprocess(gray, encoder.spec)
    theirs = torch.as_tensor(processor(Image.fromarray(gray).convert("RGB"), return_tensors="pt")["pixel_values"][0])

    assert ours.shape == theirs.shape == (3, 28, 28)
    assert ((ours - theirs).abs() * 0.2583 * 255).max() <= 3.0, "within three grey levels"
    with torch.no_grad():
        reference = model(pixel_values=theirs[None]).last_hidden_state[:, 0]
    cosine = torch.nn.functional.cosine_similarity(encoder.encode(ours[None]).pooled, reference).item()
    assert cosine > 0.999


def test_siglip_towers_embed_with_their_own_heads(hub_cache):
    model, _ = tiny_siglip(hub_cache)
    image_encoder = load_image_encoder("hf:test-org/tiny-siglip")
    text_encoder = load_text_encoder("hf:test-org/tiny-siglip")
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(2))

    assert image_encoder.spec.pooling is text_encoder.spec.pooling is Pooling.POOLER
    assert text_encoder.spec.max_length == 16, "the model's position embeddings bound the length"
    with torch.no_grad():
        image_features = model.get_image_features(pixel_values=pixels)
        tokens = text_encoder.tokenizer(REPORTS, padding="max_length", truncation=True, max_length=16,
                                        return_tensors="pt")
        text_features = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    image_features = getattr(image_features, "pooler_output", image_features)
    text_features = getattr(text_features, "pooler_output", text_features)
    torch.testing.assert_close(image_encoder.encode(pixels).pooled, image_features)
    torch.testing.assert_close(text_encoder.encode(REPORTS).pooled, text_features)
    assert image_encoder.encode(pixels, with_tokens=True).tokens.shape == (2, 4, 32), "SigLIP has no class token"


def test_a_two_tower_model_named_directly_needs_its_modality(hub_cache):
    tiny_siglip(hub_cache)

    with pytest.raises(SpecError, match="image and a text tower"):
        get_spec("hf:test-org/tiny-siglip")


def test_cls_pooling_on_a_model_without_a_class_token_is_refused(hub_cache, tmp_path):
    tiny_siglip(hub_cache)
    registry = tmp_path / "siglip-cls.toml"
    registry.write_text("""
[backbones.siglip-cls]
modality = "image"
source = "transformers"
model_id = "test-org/tiny-siglip"
dim = 32
pooling = "cls"
[backbones.siglip-cls.image]
steps = [{ op = "resize", size = 28, interpolation = "bicubic" }]
""")

    with pytest.raises(IncompatibleWeights, match="no class token"):
        load_image_encoder(get_spec("siglip-cls", registry=[registry]))


def test_adaptor_extract_images_and_texts_run_hf_models_through_the_normal_lookup(hub_cache, tiny_dataset):
    tiny_siglip(hub_cache)
    tiny_dinov2(hub_cache)
    cache, _ = tiny_dataset
    runner = CliRunner()

    for command, backbone in (("images", "hf:test-org/tiny-dinov2"), ("images", "hf:test-org/tiny-siglip"),
                              ("texts", "hf:test-org/tiny-siglip")):
        result = runner.invoke(app, [command, "--cache", str(cache), "--dataset", "tiny", "--backbone", backbone,
                                     "--tokens", *(["--workers", "0"] if command == "images" else [])])
        assert result.exit_code == 0, result.output

    dinov2 = CacheStore.open(store_path(cache, "tiny", Modality.IMAGE, "hf:test-org/tiny-dinov2"))
    assert dinov2.path.name == "hf:test-org--tiny-dinov2.zarr", "one folder per store, even for a hub id"
    assert dinov2.provenance.backbone == "hf:test-org/tiny-dinov2"
    assert dinov2.read("embedding").shape == (12, 32) and dinov2.read("tokens").shape == (12, 4, 32)
    text = CacheStore.open(store_path(cache, "tiny", Modality.TEXT, "hf:test-org/tiny-siglip"))
    assert text.provenance.preprocessing["max_length"] == 16 and text.read("tokens").shape[1] == 16


@pytest.fixture(scope="module")
def cxr_bert_specialized(tmp_path_factory):
    """A BERT checkpoint in CXR-BERT-specialized's published form: CXRBertModel config with auto_map, MLM
    head and 128-d projection head tensors, a tokenizer, and a remote-code module that must never run."""
    folder = tmp_path_factory.mktemp("cxr-bert")
    torch.manual_seed(2)
    config = BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=64,
                        vocab_size=30522)
    BertForMaskedLM(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["cls_projection_head.dense_to_hidden.weight"] = torch.randn(128, 768)
    tensors["cls_projection_head.dense_to_output.weight"] = torch.randn(128, 128)
    save_file(tensors, folder / "model.safetensors")
    published = json.loads((folder / "config.json").read_text())
    published.update(model_type="cxr-bert", architectures=["CXRBertModel"], projection_size=128,
                     auto_map={"AutoConfig": "configuration_cxrbert.CXRBertConfig",
                               "AutoModel": "modeling_cxrbert.CXRBertModel"})
    (folder / "config.json").write_text(json.dumps(published))
    marker = folder / "remote-code-ran"
    for module in ("configuration_cxrbert.py", "modeling_cxrbert.py"):
        (folder / module).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return folder, marker


def place_in_cache(cache, repo_id, folder):
    from .published_layouts import hub_snapshot

    snapshot = hub_snapshot(cache, repo_id)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    return snapshot


def test_cxr_bert_specialized_loads_its_bert_encoder_without_remote_code(hub_cache, cxr_bert_specialized):
    folder, marker = cxr_bert_specialized
    place_in_cache(hub_cache, "microsoft/BiomedVLP-CXR-BERT-specialized", folder)

    encoder = load_text_encoder("cxr-bert-specialized")
    output = encoder.encode(REPORTS, with_tokens=True)

    bert = BertModel(BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=64,
                                vocab_size=30522), add_pooling_layer=False).eval()
    tensors = load_file(folder / "model.safetensors")
    bert.load_state_dict({key.removeprefix("bert."): value for key, value in tensors.items()
                          if key.startswith("bert.")})
    tokens = encoder.tokenizer(REPORTS, padding="max_length", truncation=True, max_length=112, return_tensors="pt")
    with torch.no_grad():
        reference = bert(**tokens).last_hidden_state[:, 0]
    torch.testing.assert_close(output.pooled, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.pooled, output.tokens[:, 0])
    assert not marker.exists(), "the checkpoint's remote code must never run"


def test_a_model_that_asks_for_remote_code_is_refused_when_named_directly(hub_cache, cxr_bert_specialized):
    folder, marker = cxr_bert_specialized
    place_in_cache(hub_cache, "microsoft/BiomedVLP-CXR-BERT-specialized", folder)

    with pytest.raises(SpecError, match="asks for remote code.*never runs.*architecture = \"bert\""):
        get_spec("hf:microsoft/BiomedVLP-CXR-BERT-specialized", modality=Modality.TEXT)
    assert not marker.exists()


@pytest.fixture(scope="module")
def bert_without_pooler(tmp_path_factory):
    """A BERT-base-wide checkpoint saved from a masked-language model: it has no pooler weights."""
    folder = tmp_path_factory.mktemp("bert-mlm")
    torch.manual_seed(3)
    BertForMaskedLM(BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=64,
                               vocab_size=30522)).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


def test_pooler_pooling_on_a_checkpoint_without_a_pooler_is_refused_with_the_missing_names(
        hub_cache, bert_without_pooler, tiny_dataset, capfd):
    place_in_cache(hub_cache, "bert-base-uncased", bert_without_pooler)
    cache, _ = tiny_dataset

    result = CliRunner().invoke(app, ["texts", "--cache", str(cache), "--dataset", "tiny", "--backbone", "bert"])

    assert result.exit_code == 2
    assert "lacks 2 tensor(s)" in result.output and "pooler.dense.bias, pooler.dense.weight" in result.output
    assert "no trained pooler" in result.output and "Traceback" not in result.output
    assert not store_path(cache, "tiny", Modality.TEXT, "bert").exists()
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.err + captured.out and "Loading weights" not in captured.err + captured.out


def test_the_libraries_load_reports_and_progress_bars_show_only_when_verbose(hub_cache, cxr_bert_specialized, capfd,
                                                                            caplog):
    folder, _ = cxr_bert_specialized
    place_in_cache(hub_cache, "microsoft/BiomedVLP-CXR-BERT-specialized", folder)

    load_text_encoder("cxr-bert-specialized")
    quiet, quiet_log = capfd.readouterr(), caplog.text
    caplog.clear()
    load_text_encoder("cxr-bert-specialized", verbose=True)
    verbose, verbose_log = capfd.readouterr(), caplog.text

    assert "UNEXPECTED" not in quiet.err + quiet.out + quiet_log, "no load report"
    assert "Loading weights" not in quiet.err + quiet.out, "no progress bar"
    assert "cls_projection_head.dense_to_hidden.weight" in verbose_log, "the unused projection head is reported"
    assert "Loading weights" in verbose.err + verbose.out


@pytest.mark.slow
def test_the_published_pooler_variant_reads_a_pooler_initialised_from_its_seed(hub_cache, bert_without_pooler):
    """CXR-BERT-general has no pooler tensors; the published code read BertModel's freshly initialised one."""
    place_in_cache(hub_cache, "microsoft/BiomedVLP-CXR-BERT-general", bert_without_pooler)

    published = load_text_encoder("cxrbert-published-pooler")
    again = load_text_encoder("cxrbert-published-pooler")
    corrected = load_text_encoder("cxrbert")
    output = published.encode(REPORTS, with_tokens=True)

    torch.manual_seed(42)  # transformers' _init_weights for a Linear layer, right after the published seed
    weight = torch.empty(768, 768).normal_(mean=0.0, std=0.02)
    reference = torch.tanh(output.tokens[:, 0] @ weight.T)
    torch.testing.assert_close(output.pooled, reference, rtol=1e-4, atol=1e-5)
    assert published.weights_sha256 == again.weights_sha256 != corrected.weights_sha256
    assert published.preprocessing["pooler_init_seed"] == 42 and published.spec.pooling is Pooling.POOLER
    torch.testing.assert_close(corrected.encode(REPORTS).pooled, output.tokens[:, 0], rtol=1e-4, atol=1e-5)
    assert "pooler_init_seed" not in corrected.preprocessing
