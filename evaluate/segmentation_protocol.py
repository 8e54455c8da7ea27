"""How a segmentation decoder is built and trained, as one typed record a protocol file can fill.

`SegmentationProtocol` holds every choice of the downstream segmentation model: the decoder, the
loss, the optimiser and its schedule, when validation runs and how long training waits for it,
the image size the store was extracted at and how many augmented views training cycles through.
Its defaults are the published runs (holajoa/Adaptor-VL-SSL, commit 2414548): each field's note names
the file and line it comes from. `from_values` builds it from plain values (a protocol file's table),
naming the key and source of anything it refuses.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping


class DecoderName(str, Enum):
    """The decoder read by `evaluate.segmentation_decoders.build_decoder`."""

    PUBLISHED_VIT = "published-vit"
    """models/seg_models.py ViTDecoder: a 3x3 conv/BN/ReLU on the token grid (no padding at a 16 x 16 grid;
    padded and resized by 14/16 otherwise), four conv3x3/BN/ReLU/x2-upsample stages of 512, 256, 128 and 64
    channels, a 3x3 conv to one channel. Its mask is 14 pixels per token: the input image's resolution."""
    LIGHT = "light"
    """A 1x1 conv to 128 channels, two x2 bilinear conv stages, a 1x1 conv: four pixels per token. For token
    grids the published decoder cannot read (a CNN's 2 x 2 or 3 x 3 map) and for quick CPU checks."""


class LossName(str, Enum):
    """The training loss read by `evaluate.segmentation_loss.loss_function`."""

    PUBLISHED_MIXED = "published-mixed"
    """MGCA's MixedLoss with the original Dice (--original_dice_loss in both shell/segment-*.sh): 10 x focal
    loss (gamma 2, mean over pixels) minus the log of one smoothed soft Dice over the whole batch."""
    DICE_BCE = "dice-bce"
    """Binary cross-entropy plus the mean per-image soft Dice loss (1 - Dice, smoothed by 1)."""


class SelectionMetric(str, Enum):
    """What picks the kept epoch among the validated ones."""

    PUBLISHED_DICE = "published-dice"
    """The published code's validation Dice (models/segmenter.py get_dice: an empty mask predicted empty
    scores 1), higher is better, an improvement counting only above `min_improvement` (segment.py:150)."""
    LOSS = "loss"
    """The lowest validation loss."""


@dataclass(frozen=True)
class SegmentationProtocol:
    """Every setting of the segmentation decoder's training; the defaults are the published SIIM runs' but for
    the input size (None: the plain store; `PUBLISHED_SIIM` sets 896)."""

    decoder: DecoderName = DecoderName.PUBLISHED_VIT
    """segment.py:97-105 builds DINOv2Segmenter, whose decoder is ViTDecoder (models/seg_models.py:178-235)."""
    loss: LossName = LossName.PUBLISHED_MIXED
    """models/segmenter.py:33 MixedLoss(alpha=10, modified_dice_loss=not --original_dice_loss)."""
    learning_rate: float = 5e-4
    """shell/segment-siim.sh and segment-rsna.sh: --lr 5e-4 (AdamW, models/segmenter.py:106-111)."""
    weight_decay: float = 1e-4
    """shell/segment-*.sh: --weight_decay 1e-4."""
    batch_size: int = 4
    """shell/segment-*.sh: --batch_size 4 (per GPU; the runs used two GPUs under DDP, so 8 per step)."""
    cosine_period_epochs: int = 100
    """models/segmenter.py:112-117: CosineAnnealingWarmRestarts(T_0=100, T_mult=1), stepped once per
    epoch (Lightning's default interval), from the learning rate down to `min_learning_rate`."""
    min_learning_rate: float = 1e-8
    """models/segmenter.py:116: eta_min=1e-8."""
    max_epochs: int = 100
    """shell/segment-siim.sh: --num_train_epochs 100 (segment-rsna.sh: 50)."""
    validation_interval: int = 3
    """shell/segment-*.sh: --check_val_every_n_epochs 3."""
    patience_epochs: int = 10
    """shell/segment-*.sh: --patience_epochs 10; segment.py:151 waits patience_epochs // interval = 3
    validations without a new best before stopping."""
    min_improvement: float = 1e-3
    """segment.py:148-150: EarlyStopping(min_delta=1e-3)."""
    selection: SelectionMetric = SelectionMetric.PUBLISHED_DICE
    """segment.py:147-149: ModelCheckpoint and EarlyStopping monitor val_dice (mode max); the test runs on the
    best checkpoint (segment.py:187)."""
    image_size: int | None = None
    """The side of the square whole-image input the decoder reads: the store `adaptor extract images
    --segmentation-size` wrote at that size (`<backbone>.seg<size>`). None reads the plain store, in the
    backbone's own frame (its classification steps). The published runs: shell/segment-siim.sh --crop_size
    896, segment-rsna.sh the default 224 (utils/args.py:30); `PUBLISHED_SIIM`, `PUBLISHED_RSNA`."""
    views: int = 0
    """Augmented training views per image, a new one each epoch. The published code drew a fresh
    ShiftScaleRotate (MGCA segmentation_dataset.py:149-155) every epoch; the cache holds `views` of them."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "cosine_period_epochs", "max_epochs", "validation_interval", "image_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("patience_epochs", "views"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.min_learning_rate < 0 or self.min_improvement < 0:
            raise ValueError("learning_rate must be positive; weight_decay, min_learning_rate and min_improvement "
                             "must not be negative")

    @property
    def patience_validations(self) -> int:
        """Validations without a new best before training stops (segment.py:151: integer division)."""
        return self.patience_epochs // self.validation_interval

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str = "the segmentation settings") -> SegmentationProtocol:
        """The record from plain values (strings for the choices, numbers for the rest); unnamed fields keep the
        published defaults. Unknown keys and bad values raise ValueError naming `source` and the key."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        choices = {"decoder": DecoderName, "loss": LossName, "selection": SelectionMetric}
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            default = 0 if key == "image_size" else getattr(cls, key)
            try:
                if key in choices:
                    parsed[key] = choices[key](value)
                elif isinstance(default, int) and not isinstance(value, bool) and float(value) == int(value):
                    parsed[key] = int(value)
                elif isinstance(default, float) and not isinstance(value, bool):
                    parsed[key] = float(value)
                else:
                    raise ValueError(value)
            except (TypeError, ValueError):
                allowed = [choice.value for choice in choices[key]] if key in choices else type(default).__name__
                raise ValueError(f"{source}: {key} = {value!r} is not valid; expected {allowed}") from None
        try:
            return cls(**parsed)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def to_json(self) -> dict[str, Any]:
        """The settings as plain values, for a result's record."""
        return {name: value.value if isinstance(value, Enum) else value
                for name, value in dataclasses.asdict(self).items()}


PUBLISHED_SIIM = SegmentationProtocol(image_size=896)
"""shell/segment-siim.sh: 896 px, up to 100 epochs."""
PUBLISHED_RSNA = dataclasses.replace(PUBLISHED_SIIM, image_size=224, max_epochs=50)
"""shell/segment-rsna.sh: the default crop size 224, --num_train_epochs 50."""
