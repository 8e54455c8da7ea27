"""The backbone registry as data: built-in TOML files, user files, the environment variable, and
`adaptor extract backbones`."""
import dataclasses
import json

import pytest
from huggingface_hub import constants as hub_constants
from typer.testing import CliRunner

from adaptor_vlp.extract.backbones import (
    REGISTRY_ENV,
    BackboneSpec,
    ImagePreprocessing,
    ImageStep,
    Interpolation,
    Modality,
    Pooling,
    RegistryError,
    Source,
    SpecError,
    StepOp,
    UnknownBackbone,
    get_spec,
    load_registry,
)
from adaptor_vlp.extract.cli import app
from adaptor_vlp.extract.text_cleaning import TextCleaning

PAPER_IMAGE = ("dinov2-s", "dinov2-b", "resnet-ae")
PAPER_TEXT = ("bert", "biobert", "clinicalbert", "pubmedbert", "cxrbert")
CURRENT = ("rad-dino", "medsiglip", "cxr-bert-specialized")

USER_REGISTRY = """
[backbones.my-vit]
modality = "image"
source = "timm"
model_id = "test_vit"
dim = 64
pooling = "mean"
random_init_seed = 11
notes = "a user's entry"
[backbones.my-vit.image]
steps = [{ op = "resize", size = 64, interpolation = "bilinear" }]
"""


@pytest.fixture
def user_registry(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(USER_REGISTRY)
    return path


def test_the_paper_backbones_are_registered_with_the_papers_settings():
    dinov2 = get_spec("dinov2-s")
    assert (dinov2.modality, dinov2.source, dinov2.model_id) == (
        Modality.IMAGE, Source.TIMM, "vit_small_patch14_dinov2.lvd142m")
    assert dinov2.image.steps == (
        ImageStep(StepOp.RESIZE_LONGEST, 256, Interpolation.AREA), ImageStep(StepOp.PAD_SQUARE),
        ImageStep(StepOp.CENTER_CROP, 224))
    assert dinov2.image_size == 224 and dinov2.image.mean == dinov2.image.std == (0.5, 0.5, 0.5)
    assert dinov2.pooling is Pooling.CLS and dinov2.dim == 384
    assert get_spec("dinov2-b").dim == 768 and get_spec("dinov2-b").image == dinov2.image
    resnet_ae = get_spec("resnet-ae")
    assert (resnet_ae.source, resnet_ae.model_id, resnet_ae.dim, resnet_ae.pooling) == (
        Source.TORCHXRAYVISION, "101-elastic", 512, Pooling.MEAN)
    assert resnet_ae.image.channels == 1 and resnet_ae.image_size == 224
    for name in PAPER_TEXT:
        text = get_spec(name)
        assert text.modality is Modality.TEXT and text.max_length == 112
        assert text.pooling is (Pooling.CLS if name == "cxrbert" else Pooling.POOLER)
        assert text.text_cleaning is TextCleaning.MGCA
    published_pooler = get_spec("cxrbert-published-pooler")
    assert published_pooler.model_id == get_spec("cxrbert").model_id and published_pooler.pooling is Pooling.POOLER
    assert published_pooler.pooler_init_seed == 42 and published_pooler.text_cleaning is TextCleaning.MGCA
    assert get_spec("minilm").text_cleaning is TextCleaning.NONE


@pytest.mark.parametrize("extra, problem", [
    ('text_cleaning = "mgca"', "text_cleaning is for text backbones"),
    ("pooler_init_seed = 1", "pooler_init_seed goes with a pretrained text checkpoint"),
])
def test_text_only_settings_on_an_image_entry_are_refused(tmp_path, extra, problem):
    path = tmp_path / "mine.toml"
    path.write_text(USER_REGISTRY.replace('notes = "a user\'s entry"', extra))
    with pytest.raises(RegistryError, match=problem):
        load_registry([path])


def test_an_unknown_text_cleaning_is_refused_naming_the_choices(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(USER_REGISTRY.replace('modality = "image"', 'modality = "text"').replace(
        'notes = "a user\'s entry"', 'text_cleaning = "gloria"').split("[backbones.my-vit.image]")[0])
    with pytest.raises(RegistryError, match="text_cleaning"):
        load_registry([path])


def test_todays_chest_xray_encoders_are_registered_with_their_model_cards_settings():
    rad_dino = get_spec("rad-dino")
    assert (rad_dino.model_id, rad_dino.dim, rad_dino.image_size, rad_dino.pooling) == (
        "microsoft/rad-dino", 768, 518, Pooling.CLS)
    image, text = get_spec("medsiglip", modality=Modality.IMAGE), get_spec("medsiglip", modality=Modality.TEXT)
    assert image.modality is Modality.IMAGE and text.modality is Modality.TEXT
    assert image.model_id == text.model_id == "google/medsiglip-448" and image.dim == text.dim == 1152
    assert image.image_size == 448 and text.max_length == 64 and image.pooling is text.pooling is Pooling.POOLER
    specialized = get_spec("cxr-bert-specialized")
    assert specialized.architecture == "bert" and specialized.pooling is Pooling.CLS
    assert all(get_spec(name, modality=Modality.IMAGE).notes for name in ("rad-dino", "medsiglip"))


def test_a_two_tower_name_needs_its_modality():
    with pytest.raises(UnknownBackbone, match="image and a text tower"):
        get_spec("medsiglip")


def test_random_init_backbones_name_their_seed_in_the_weights_id():
    specs = [entry.spec for entry in load_registry().entries()]
    seeds = set()
    for spec in specs:
        if spec.is_random_init:
            assert spec.weights_id == f"random-init:seed={spec.random_init_seed}"
            seeds.add(spec.random_init_seed)
        else:
            assert spec.weights_id == spec.model_id
    assert {"tiny-vit", "tiny-resnet", "tiny-bert"} <= {spec.name for spec in specs}
    assert len(seeds) == sum(spec.is_random_init for spec in specs), "each random-init backbone has its own seed"


def test_unknown_backbone_error_lists_the_known_names_and_the_ad_hoc_schemes():
    with pytest.raises(UnknownBackbone, match="unknown backbone 'vit-huge'.*dinov2-s.*tiny-bert.*timm:.*hf:"):
        get_spec("vit-huge")


def test_a_user_registry_file_adds_entries(user_registry):
    spec = get_spec("my-vit", registry=[user_registry])

    assert spec.image.steps == (ImageStep(StepOp.RESIZE, 64, Interpolation.BILINEAR),) and spec.dim == 64
    assert spec.notes == "a user's entry"
    with pytest.raises(UnknownBackbone):
        get_spec("my-vit")


def test_the_environment_variable_names_default_registry_files(user_registry, monkeypatch):
    monkeypatch.setenv(REGISTRY_ENV, str(user_registry))

    assert get_spec("my-vit").dim == 64
    assert get_spec("my-vit", registry=[user_registry]).dim == 64, "a file named twice is read once"


def test_a_user_file_cannot_redefine_a_built_in_name(tmp_path):
    path = tmp_path / "clash.toml"
    path.write_text(USER_REGISTRY.replace("my-vit", "dinov2-s"))

    with pytest.raises(
        RegistryError, match=r"clash.toml: backbone 'dinov2-s' is already defined in built-in paper.toml"
    ):
        load_registry([path])


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace('pooling = "mean"', 'pooling = "max"'),
     r"pooling = 'max' is not one of cls, mean, pooler"),
    (lambda text: text.replace('dim = 64', 'dim = 64\nwidth = 3'), r"unknown key\(s\) width"),
    (lambda text: text.replace('op = "resize"', 'op = "pad_square"'), r"step 1: image step 'pad_square' takes no size"),
    (lambda text: text.replace('{ op = "resize", size = 64, interpolation = "bilinear" }',
                               '{ op = "resize_shortest", size = 64, interpolation = "bilinear" }'), "fixed square"),
    (lambda text: text.replace('model_id = "test_vit"\n', ''), "lacks 'model_id'"),
    (lambda text: text + "\n[other]\nx = 1\n", r"unknown top-level table\(s\) other"),
    (lambda text: text.replace("[backbones.my-vit.image]", "[backbones.my-vit.imagery]"), r"unknown key\(s\) imagery"),
    (lambda text: text.replace('dim = 64', 'dim = 64\nposition_embedding = "resampled"'),
     r"position_embedding = 'resampled' is not one of checkpoint, hub-interpolated"),
])
def test_a_bad_registry_file_is_refused_naming_the_file_the_entry_and_the_key(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(USER_REGISTRY))

    with pytest.raises(RegistryError, match=message) as raised:
        load_registry([path])
    assert "bad.toml" in str(raised.value)


def test_a_registry_file_that_is_not_toml_or_absent_is_refused(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[backbones.x\n")
    with pytest.raises(RegistryError, match="broken.toml is not readable TOML"):
        load_registry([broken])
    with pytest.raises(RegistryError, match="nowhere.toml does not exist"):
        load_registry([tmp_path / "nowhere.toml"])


def test_a_random_text_backbone_needs_its_architecture():
    with pytest.raises(SpecError, match="random_text_config"):
        dataclasses.replace(get_spec("tiny-bert"), random_text_config=None)
    with pytest.raises(SpecError, match="random_text_config"):
        dataclasses.replace(get_spec("tiny-bert"), random_init_seed=None)


def test_pooler_pooling_is_rejected_for_timm_and_torchxrayvision_image_backbones():
    with pytest.raises(SpecError, match="pooler pooling exists only for text backbones and transformers"):
        BackboneSpec(name="odd", modality=Modality.IMAGE, source=Source.TIMM, model_id="test_vit", dim=64,
                     pooling=Pooling.POOLER, image=get_spec("tiny-vit").image)


def test_image_backbones_need_image_preprocessing_and_text_backbones_none():
    with pytest.raises(SpecError, match="image preprocessing goes with"):
        dataclasses.replace(get_spec("tiny-vit"), image=None)
    with pytest.raises(SpecError, match="image preprocessing goes with"):
        dataclasses.replace(get_spec("tiny-bert"), image=get_spec("tiny-vit").image)


def test_image_preprocessing_checks_channels_and_statistics():
    steps = (ImageStep(StepOp.RESIZE, 8, Interpolation.AREA),)
    with pytest.raises(SpecError, match="one value per channel"):
        ImagePreprocessing(steps, channels=1, mean=(0.5, 0.5, 0.5), std=(0.5,))
    with pytest.raises(SpecError, match="positive"):
        ImagePreprocessing(steps, std=(0.5, 0.0, 0.5))
    with pytest.raises(SpecError, match="only a resize can keep fractions"):
        ImageStep(StepOp.PAD_SQUARE, rounded=False)


def test_the_text_length_cap_applies_to_registry_entries():
    assert get_spec("bert", max_length=64).max_length == 64
    assert get_spec("bert", max_length=512).max_length == 112


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_cli_lists_the_registry_as_json_with_where_each_entry_is_defined(empty_hub_cache, user_registry):
    result = CliRunner().invoke(app, ["backbones", "--json", "--registry", str(user_registry)])

    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    names = [row["name"] for row in rows]
    assert set(PAPER_IMAGE + PAPER_TEXT + CURRENT + ("minilm", "my-vit")) <= set(names)
    assert names[:3] == list(PAPER_IMAGE), "the paper's backbones come first"
    by_name = {(row["name"], row["modality"]): row for row in rows}
    assert by_name[("dinov2-s", "image")] == {
        "name": "dinov2-s", "modality": "image", "source": "timm", "dim": 384, "input": "224px", "pooling": "cls",
        "weights_id": "vit_small_patch14_dinov2.lvd142m", "available": False, "defined_in": "built-in paper.toml",
    }
    assert {("medsiglip", "image"), ("medsiglip", "text")} <= set(by_name)
    assert by_name[("resnet-ae", "image")]["source"] == "torchxrayvision"
    assert by_name[("my-vit", "image")]["defined_in"] == str(user_registry)
    assert by_name[("minilm", "text")]["available"] and by_name[("tiny-bert", "text")]["available"]
    assert by_name[("tiny-bert", "text")]["input"] == "112 tokens"


def test_cli_lists_the_registry_as_a_table(empty_hub_cache):
    result = CliRunner().invoke(app, ["backbones"])

    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split() == ["name", "modality", "source", "dim", "input", "pooling", "weights_id", "available",
                              "defined_in"]
    assert len(lines) == len(load_registry().entries())
    bert = next(line for line in lines if line.startswith("bert "))
    assert bert.split() == ["bert", "text", "transformers", "768", "112", "tokens", "pooler", "bert-base-uncased", "no",
                            "built-in", "paper.toml"]


def test_cli_refuses_a_bad_registry_file_in_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[backbones.x]\nmodality = 'image'\n")

    result = CliRunner().invoke(app, ["backbones", "--registry", str(path)])

    assert result.exit_code == 2
    assert "bad.toml: backbone 'x' lacks 'source'" in result.output
    assert "Traceback" not in result.output


def test_the_readmes_example_entry_is_a_valid_registry_file(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my-backbones.toml"
    path.write_text(example)

    spec = get_spec("vit-b16-augreg", registry=[path])

    assert spec.image_size == 224 and spec.image.steps[0].interpolation is Interpolation.AREA
