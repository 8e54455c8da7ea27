"""Training recipes: every setting of an Adaptor run, with the paper's values as defaults.

A recipe is the whole answer to "how was this Adaptor trained": optimiser, schedule, data share,
model shape. It is stored in every checkpoint, compared on resume, and its field names are the
option names of `adaptor train run` (dashes for underscores) and the keys of a sweep grid.
"""
from __future__ import annotations

import enum
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from adaptor_vlp.train.model import AdaptorConfig, AdaptorInputs


class RecipeError(ValueError):
    """A recipe setting is unknown or out of range."""


class Selection(str, enum.Enum):
    """Which validation number picks the best epoch and drives early stopping."""

    LOSS = "loss"
    RECALL = "recall"

    @property
    def metric(self) -> str:
        """The metrics-row key this selection reads: mean of both directions' recall@5, or the loss."""
        return "val_loss" if self is Selection.LOSS else "val_recall@5"

    def improves(self, value: float, best: float | None) -> bool:
        """True when `value` beats `best` (lower loss, higher recall); anything beats no best yet."""
        if best is None:
            return True
        return value < best if self is Selection.LOSS else value > best


@dataclass(frozen=True)
class Recipe:
    """How to train one Adaptor. Defaults are the paper's where it states them.

    Not stated in the paper, chosen here: ``grad_clip`` (max global gradient norm, 1.0),
    ``patience`` (epochs without improvement before stopping; 0 never stops early),
    ``subset_seed`` (seeds the ``data_pct`` subset separately from ``seed``, so a seed sweep
    trains on the same pairs, and the subsets of one seed are nested: 1% within 10% within 100%),
    ``use_views`` (sample a cached augmented view per image per epoch when the store has them) and
    ``token_window_shards`` (image shards held in memory at once in tokens mode; batches are drawn
    from within them).
    """

    epochs: int = 50
    batch_size: int = 1024
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.02
    grad_clip: float = 1.0
    patience: int = 10
    select_by: Selection = Selection.LOSS
    seed: int = 42
    subset_seed: int = 0
    data_pct: float = 100.0
    use_views: bool = True
    inputs: AdaptorInputs = AdaptorInputs.POOLED
    image_weight: float = 0.75
    projection_dim: int = 768
    num_layers: int = 2
    num_heads: int = 12
    ffn_dim: int = 2048
    dropout: float = 0.1
    token_window_shards: int = 4

    def __post_init__(self) -> None:
        for name in ("epochs", "token_window_shards"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise RecipeError(f"batch_size must be at least 2 (a contrastive batch needs negatives), "
                              f"got {self.batch_size}")
        if self.patience < 0:
            raise RecipeError(f"patience must be 0 (never stop early) or more, got {self.patience}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise RecipeError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise RecipeError(f"weight_decay must be 0 or more, got {self.weight_decay!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise RecipeError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not 0 < self.data_pct <= 100:
            raise RecipeError(f"data_pct must be in (0, 100], got {self.data_pct!r}")
        if not 0 <= self.image_weight <= 1:
            raise RecipeError(f"image_weight must be in [0, 1], got {self.image_weight!r}")
        try:
            self.adaptor_config(image_dim=1, text_dim=1)
        except ValueError as error:
            raise RecipeError(str(error).replace("AdaptorConfig.", "")) from None

    def adaptor_config(self, image_dim: int, text_dim: int) -> AdaptorConfig:
        """The Adaptor this recipe trains on features of the given widths."""
        return AdaptorConfig(
            image_dim=image_dim,
            text_dim=text_dim,
            projection_dim=self.projection_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            ffn_dim=self.ffn_dim,
            dropout=self.dropout,
            inputs=self.inputs,
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> Recipe:
        """This recipe with some settings replaced; values are checked and converted by the field's type.

        Raises RecipeError naming the setting when a name is unknown or a value does not fit.
        """
        known = {field.name for field in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise RecipeError(f"unknown recipe setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{name: _convert(name, value) for name, value in overrides.items()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, stored in checkpoints and compared on resume."""
        return {name: value.value if isinstance(value, enum.Enum) else value for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Recipe:
        """The recipe a checkpoint recorded; unknown or missing settings are an error."""
        missing = sorted({field.name for field in fields(cls)} - set(values))
        if missing:
            raise RecipeError(f"recorded recipe lacks {missing}; it was written by other code")
        return cls().with_overrides(values)


class RecipeName(str, enum.Enum):
    """Named starting points for `--recipe`; individual options then override single settings."""

    PAPER = "paper"
    DEMO = "demo"


PAPER = Recipe()
"""Qin et al.'s recipe: batch 1024, AdamW lr 2e-5, wd 0.01, 2% warm-up then linear decay, 50 epochs, seed 42."""

DEMO = Recipe(
    epochs=40,
    batch_size=32,
    lr=1e-3,
    warmup_fraction=0.05,
    patience=10,
    select_by=Selection.RECALL,
    projection_dim=256,
    num_layers=1,
    num_heads=4,
    ffn_dim=512,
)
"""Learns within seconds on this 2-core CPU from the few hundred pairs of the bundled demo.

Measured: on the demo cache (60 subjects: 155 training and 28 validation pairs; tiny-vit with
random weights and MiniLM) it reaches validation recall@5 of about 0.55-0.7 (chance about 0.2)
in 2-6 s; the paper's recipe reaches 0.41 in 30 epochs and 25 s, because lr 2e-5 barely moves
a 12 M-parameter Adaptor in the ~150 steps a tiny dataset gives. Hence a 50x larger learning
rate, a 256-wide single-layer Adaptor (~0.6 M parameters), batch 32 so that an epoch has
several steps, and selection by recall (the loss of a 28-pair validation split is noisy).
"""

RECIPES: dict[RecipeName, Recipe] = {RecipeName.PAPER: PAPER, RecipeName.DEMO: DEMO}


def _convert(name: str, value: Any) -> Any:
    """`value` as the type of recipe field `name` (enums from their string values, ints as floats)."""
    kind = typing.get_type_hints(Recipe)[name]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise RecipeError(f"{name}={value!r} is not one of {[member.value for member in kind]}") from None
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    raise RecipeError(f"{name}={value!r} must be of type {kind.__name__}")
