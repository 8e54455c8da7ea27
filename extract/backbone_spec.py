"""What a backbone is, as data: the `BackboneSpec` record and the choices it is made of.

A spec says which network to build, where its weights come from and everything that changes the
embedding it produces (the image steps and normalisation, the tokenizer's maximum length, the
pooling), so a cache store's provenance can be derived from the spec alone. Specs are read from
registry files (`extract.backbones`) or derived from a model's own configuration (`extract.adhoc`);
this module only defines and checks them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.extract.text_cleaning import TextCleaning

RANDOM_INIT_PREFIX = "random-init:seed="
SPEC_DECIDED_TEXT_RECORD = ("text_cleaning", "pooler_init_seed")
"""The keys of `BackboneSpec.text_record`."""


class Source(str, Enum):
    """The library that builds the network."""

    TIMM = "timm"
    TRANSFORMERS = "transformers"
    TORCHXRAYVISION = "torchxrayvision"


class Pooling(str, Enum):
    """How per-token outputs become one vector per sample."""

    CLS = "cls"
    """The class token after the final norm (ViT/DINOv2), or a text model's [CLS] hidden state."""
    MEAN = "mean"
    """Global average pool of a CNN feature map or of a ViT's patch tokens, or the masked mean of text tokens."""
    POOLER = "pooler"
    """The model's own pooling head: BERT's tanh(dense([CLS])), SigLIP's attention-pooling head."""


class Interpolation(str, Enum):
    """How a resize step computes its pixels."""

    BICUBIC = "bicubic"
    """Antialiased bicubic, as Pillow and torchvision resize (timm's and most processors' default)."""
    BILINEAR = "bilinear"
    """Antialiased bilinear, as Pillow and torchvision resize."""
    AREA = "area"
    """Each output pixel is the area-weighted mean of the input pixels it covers (OpenCV's INTER_AREA)."""
    OPENCV_LINEAR = "opencv-linear"
    """Bilinear from the two nearest pixels per axis, without antialiasing (OpenCV's INTER_LINEAR, the default of
    the cv2.resize that MGCA's segmentation datasets apply to whole radiographs)."""


class PositionEmbedding(str, Enum):
    """How a ViT's learnt position table meets an input of another size than it was trained at."""

    CHECKPOINT = "checkpoint"
    """The library's own way: timm resamples the checkpoint's table once, when it loads, to the input's grid
    (bicubic, antialiased, sizes without offset)."""
    HUB_INTERPOLATED = "hub-interpolated"
    """The table stays at the checkpoint's grid and is interpolated at every forward pass as torch.hub's
    facebookresearch/dinov2 models do (vision_transformer.py interpolate_pos_encoding): bicubic, no
    antialias, scale factors (g + 0.1) / M for a g x g input grid and an M x M table."""


class StepOp(str, Enum):
    """One geometric step from a decoded radiograph towards the square model input."""

    RESIZE_SHORTEST = "resize_shortest"
    """Shorter side to `size`, aspect ratio kept (longer side int(size * long / short))."""
    RESIZE_LONGEST = "resize_longest"
    """Longer side to `size`, aspect ratio kept (shorter side int(short * size / long), as MGCA's resize_img)."""
    RESIZE = "resize"
    """Both sides to `size` (a square, aspect ratio not kept)."""
    PAD_SQUARE = "pad_square"
    """Zero-pad the shorter side symmetrically to a square (floor before, ceil after, as MGCA's resize_img)."""
    CROP_SQUARE = "crop_square"
    """Centre square of the longer side (torchxrayvision's XRayCenterCrop)."""
    CENTER_CROP = "center_crop"
    """Centre `size` x `size` crop (torchvision's CenterCrop)."""


RESIZE_OPS = (StepOp.RESIZE_SHORTEST, StepOp.RESIZE_LONGEST, StepOp.RESIZE)
SIZED_OPS = (*RESIZE_OPS, StepOp.CENTER_CROP)


class SpecError(ValueError):
    """A backbone description that cannot be used, naming the entry and the field."""


@dataclass(frozen=True)
class ImageStep:
    """One step of an image backbone's geometry; resize steps carry a size and an interpolation.

    A resize rounds its output to whole grey levels (`rounded`), as Pillow and OpenCV do on
    8-bit images; `rounded = false` keeps the fractions, as OpenCV does on float images
    (torchxrayvision resizes after scaling to [-1024, 1024]).
    """

    op: StepOp
    size: int | None = None
    interpolation: Interpolation | None = None
    rounded: bool = True

    def __post_init__(self) -> None:
        if (self.op in SIZED_OPS) != (self.size is not None):
            raise SpecError(f"image step {self.op.value!r} {'needs a' if self.op in SIZED_OPS else 'takes no'} size")
        if self.size is not None and self.size < 1:
            raise SpecError(f"image step {self.op.value!r}: size must be positive, got {self.size}")
        if (self.op in RESIZE_OPS) != (self.interpolation is not None):
            raise SpecError(f"image step {self.op.value!r} {'needs an' if self.op in RESIZE_OPS else 'takes no'} "
                            "interpolation")
        if not self.rounded and self.op not in RESIZE_OPS:
            raise SpecError(f"image step {self.op.value!r} copies pixels; only a resize can keep fractions")

    def record(self) -> dict:
        """The step as JSON: its op and, when it has them, size and interpolation."""
        record: dict = {"op": self.op.value}
        if self.size is not None:
            record["size"] = self.size
        if self.interpolation is not None:
            record["interpolation"] = self.interpolation.value
            record["rounded"] = self.rounded
        return record


@dataclass(frozen=True)
class ImagePreprocessing:
    """How a decoded 8-bit grayscale radiograph becomes the backbone's input tensor.

    `steps` run in order on the gray image (pixel values 0..255); then the image is scaled to
    0..1, replicated to `channels` channels and normalised with `mean` and `std`. The steps
    must end in a fixed square: `size` is its side. `decode_size` is the shorter side images are
    decoded at by default when that is measured to be faithful to a full decode (issue 22's
    bound, `bench.decode_fidelity`); it is recorded per store as `preprocessing.decode_size`, not
    here, since it changes how the image is read, not what the steps are.
    """

    steps: tuple[ImageStep, ...]
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    decode_size: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise SpecError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise SpecError(f"mean and std need one value per channel ({self.channels}), "
                            f"got {len(self.mean)} and {len(self.std)}")
        if any(value <= 0 for value in self.std):
            raise SpecError(f"std values must be positive, got {list(self.std)}")
        output_square(self.steps)
        first_resize = next((step for step in self.steps if step.op in RESIZE_OPS), None)
        if self.decode_size is not None and (first_resize is None or self.decode_size < first_resize.size):
            raise SpecError(f"decode_size {self.decode_size} must be at least the first resize's size "
                            f"({first_resize.size if first_resize else 'there is none'})")

    @property
    def size(self) -> int:
        """The side of the square the steps produce: the model's input size."""
        return output_square(self.steps)

    def record(self) -> dict:
        """Everything here that changes an embedding, as JSON."""
        return {
            "geometry": [step.record() for step in self.steps],
            "image_size": self.size,
            "grayscale": "replicated to 3 channels" if self.channels == 3 else "one channel",
            "mean": list(self.mean),
            "std": list(self.std),
        }


def output_square(steps: tuple[ImageStep, ...]) -> int:
    """The side of the fixed square `steps` end in; SpecError when they do not end in one.

    The shape is tracked symbolically: after a resize of the longest side to S the image is
    S on its long side only, so a following pad_square makes it S x S, and so on.
    """
    square: int | None = None  # known side when the image is known to be square
    longest: int | None = None  # known long side when only that is known
    for step in steps:
        if step.op is StepOp.RESIZE:
            square, longest = step.size, step.size
        elif step.op is StepOp.RESIZE_SHORTEST:
            square, longest = None, None
        elif step.op is StepOp.RESIZE_LONGEST:
            square, longest = None, step.size
        elif step.op is StepOp.PAD_SQUARE:
            square = longest
        elif step.op is StepOp.CROP_SQUARE:
            longest = square  # the square's side is the shorter side: known only if already square
        elif step.op is StepOp.CENTER_CROP:
            square, longest = step.size, step.size
    if square is None:
        raise SpecError("the image steps must end in a fixed square (end with center_crop, resize, or "
                        "resize_longest then pad_square)")
    return square


@dataclass(frozen=True)
class RandomTextConfig:
    """Architecture of a randomly initialised BERT used by tests and the demo."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int


DEFAULT_MAX_LENGTH = 112
"""The paper's report length in tokens (MGCA's max_words)."""


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: a frozen encoder and everything that shapes its embeddings.

    `model_id` names the network for its library: a timm model name with its pretrained tag, a
    Hugging Face hub id, torchxrayvision's weights name, or (for a randomly initialised text
    backbone) a transformers model type built from `random_text_config`. Pretrained weights are
    found under `model_id` in the local caches, or inside the Python package `weights_package`.
    Backbones with `random_init_seed` set are built with seeded random weights instead (tests
    and demos). `architecture` loads a transformers checkpoint as that model type instead of
    the one its config names (a checkpoint that asks for remote code, whose encoder is a plain
    BERT). `image` is set for, and only for, image backbones. `text_cleaning` is what a text
    backbone's reports go through before its tokenizer (`extract.text_cleaning`).
    `pooler_init_seed` lets a text checkpoint without a trained pooler run `pooler` pooling
    through a pooler initialised as transformers initialises a missing one, from that torch
    seed (`extract.hf_models`). `notes` says what the entry's values rest on; it does not shape
    embeddings.
    """

    name: str
    modality: Modality
    source: Source
    model_id: str
    dim: int
    pooling: Pooling
    image: ImagePreprocessing | None = None
    random_init_seed: int | None = None
    weights_package: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    tokenizer_backbone: str | None = None
    random_text_config: RandomTextConfig | None = None
    architecture: str | None = None
    text_cleaning: TextCleaning = TextCleaning.NONE
    pooler_init_seed: int | None = None
    position_embedding: PositionEmbedding = PositionEmbedding.CHECKPOINT
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        def refuse(problem: str) -> None:
            raise SpecError(f"backbone {self.name!r}: {problem}")

        if (self.modality is Modality.IMAGE) != (self.image is not None):
            refuse("image preprocessing goes with, and only with, an image backbone")
        if (
            self.pooling is Pooling.POOLER and self.modality is Modality.IMAGE
            and self.source is not Source.TRANSFORMERS
        ):
            refuse("pooler pooling exists only for text backbones and transformers vision models")
        if self.source is Source.TORCHXRAYVISION and self.modality is not Modality.IMAGE:
            refuse("torchxrayvision backbones are image backbones")
        if self.modality is Modality.TEXT and self.source is not Source.TRANSFORMERS:
            refuse("text backbones are transformers models")
        random_text = self.source is Source.TRANSFORMERS and self.random_init_seed is not None
        if random_text != (self.random_text_config is not None):
            refuse("random_text_config goes with, and only with, a randomly initialised transformers backbone")
        if self.dim < 1 or self.max_length < 1:
            refuse("dim and max_length must be positive")
        if self.text_cleaning is not TextCleaning.NONE and self.modality is not Modality.TEXT:
            refuse("text_cleaning is for text backbones")
        if self.pooler_init_seed is not None and (self.modality is not Modality.TEXT
                                                  or self.pooling is not Pooling.POOLER or random_text):
            refuse("pooler_init_seed goes with a pretrained text checkpoint read with pooling \"pooler\"")
        if self.position_embedding is PositionEmbedding.HUB_INTERPOLATED and self.source is not Source.TIMM:
            refuse("position_embedding = 'hub-interpolated' is implemented for timm ViTs only")

    @property
    def weights_id(self) -> str:
        """The identifier of the weights: a model name or hub id, or `random-init:seed=N`."""
        if self.random_init_seed is not None:
            return f"{RANDOM_INIT_PREFIX}{self.random_init_seed}"
        return self.model_id

    def text_record(self) -> dict:
        """What of a text store's `preprocessing` this entry decides alone: `text_cleaning` and `pooler_init_seed`,
        each only when set, so stores written before they existed still resume under entries that set neither."""
        record: dict = {}
        if self.text_cleaning is not TextCleaning.NONE:
            record["text_cleaning"] = self.text_cleaning.value
        if self.pooler_init_seed is not None:
            record["pooler_init_seed"] = self.pooler_init_seed
        return record

    @property
    def is_random_init(self) -> bool:
        """True for backbones whose weights are seeded random numbers rather than a checkpoint."""
        return self.random_init_seed is not None

    @property
    def image_size(self) -> int:
        """The side of an image backbone's square input."""
        if self.image is None:
            raise SpecError(f"backbone {self.name!r} is a text backbone; it has no image size")
        return self.image.size
