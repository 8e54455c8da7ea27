"""A protocol's splits and training subsets, computed on a plain table in the order its published code held it.

The published code (MGCA's preprocess scripts and datasets) splits pandas frames with sklearn's
`train_test_split` and draws subsets with `DataFrame.sample` or NumPy's global generator. What those draws pick
depends only on the number of rows and their order, so they are reproduced here on positions: a dataset reader
builds the frame MGCA built (`FrameRow`s in MGCA's order: RSNA's patients sorted, SIIM's label rows as listed,
COVIDx's list lines) and `protocol_split` returns, per split, the images in the order the split's frame holds
them, which frame rows each image has there (an image with several label rows can be in several splits, each
with only its own rows), the training subsets the protocol draws at manifest time, and the images no split
holds (negatives left out by a balanced training split).

Under the corrected protocol the rule is `patient-groups` (`extract.datasets.splits.split_groups`): no patient
and no image in two splits; its subsets are drawn per run seed by the evaluate stage, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from adaptor_vlp.cache_schema.manifest import Split
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError
from adaptor_vlp.extract.datasets.splits import held_out, split_groups
from adaptor_vlp.protocols import SplitRule, SubsetRule, TaskProtocol, TrainingBalance

SPLIT_ORDER = (Split.TRAIN, Split.VALIDATE, Split.TEST)
SEVERAL_SPLITS_SEPARATOR = "@"
"""A manifest row id for an image in several splits: `<image>@<split>` (ids must be unique in a store)."""


@dataclass(frozen=True)
class FrameRow:
    """One row of the frame a protocol splits: its image, the image's patient, and whether it shows the finding."""

    image: str
    patient: str
    positive: bool


@dataclass(frozen=True)
class SplitImages:
    """A split's images in the order its frame holds them (first appearance), and each image's frame rows there."""

    images: tuple[str, ...]
    rows: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class ProtocolSplit:
    """Per split its images; the subsets drawn at manifest time by training percentage; images in no split.

    `subsets` is empty where the protocol draws subsets per run seed (the evaluate stage does that); a
    percentage absent from it means the whole training split.
    """

    splits: Mapping[Split, SplitImages]
    subsets: Mapping[float, frozenset[str]] = field(default_factory=dict)
    unused: tuple[str, ...] = ()

    def images_in_several_splits(self) -> frozenset[str]:
        """Images that appear in more than one split (the published SIIM split's leak)."""
        seen: dict[str, int] = {}
        for images in self.splits.values():
            for image in images.images:
                seen[image] = seen.get(image, 0) + 1
        return frozenset(image for image, count in seen.items() if count > 1)

    def row_id(self, image: str, split: Split) -> str:
        """The manifest id of `image` in `split`: the image itself, or `<image>@<split>` if it is in several."""
        if image in self.images_in_several_splits():
            return f"{image}{SEVERAL_SPLITS_SEPARATOR}{split.value}"
        return image


def protocol_split(frame: Sequence[FrameRow], task: TaskProtocol, fractions: Sequence[float] = (),
                   official_test: Sequence[FrameRow] = ()) -> ProtocolSplit:
    """The protocol's splits of `frame` (and `official_test` as the test split, where the rule keeps one).

    `fractions` are the training percentages whose subsets the protocol draws at manifest time (pandas-sample,
    numpy-choice); 100 is the whole training split unless the published code draws there too.
    """
    rows = _split_rows(frame, task)
    if official_test:
        rows[Split.TEST] = np.arange(len(frame), len(frame) + len(official_test))
    table = list(frame) + list(official_test)
    splits = {split: _images(table, rows[split]) for split in SPLIT_ORDER}
    unused: tuple[str, ...] = ()
    if task.split.balance is TrainingBalance.BALANCED:
        generator = np.random.RandomState(task.split.balance_seed)
        splits[Split.TRAIN], unused = _balanced(table, splits[Split.TRAIN], generator)
    subsets = {float(pct): _subset(table, rows[Split.TRAIN], splits, task, float(pct)) for pct in fractions
               if task.subset.rule is not SubsetRule.NESTED_SEEDED}
    return ProtocolSplit(splits, subsets, unused)


def _split_rows(frame: Sequence[FrameRow], task: TaskProtocol) -> dict[Split, np.ndarray]:
    """Frame positions per split, each in the order of the split's frame."""
    spec = task.split
    positions = np.arange(len(frame))
    if spec.rule is SplitRule.MGCA_TWO_STAGE:
        held = spec.held_out if isinstance(spec.held_out, int) else float(spec.held_out)
        if isinstance(held, int) and held >= len(frame):
            raise DownstreamLayoutError(
                f"protocol task {task.name!r} holds out {held:,} {spec.unit.value} rows for validation and test "
                f"(the published code's fixed count), but the dataset has {len(frame):,}: it needs the full dataset")
        train, rest = train_test_split(positions, test_size=held, random_state=spec.seed)
        test, validate = train_test_split(rest, test_size=0.5, random_state=spec.seed)
        return {Split.TRAIN: train, Split.VALIDATE: validate, Split.TEST: test}
    if spec.rule is SplitRule.MGCA_TRAIN_VALIDATE:
        train, validate = train_test_split(positions, train_size=spec.train_share, random_state=spec.seed)
        return {Split.TRAIN: train, Split.VALIDATE: validate, Split.TEST: positions[:0]}
    fractions = held_out(spec.validate, spec.test)
    of_patient = split_groups((row.patient for row in frame), fractions, spec.seed)
    return {split: positions[[of_patient[row.patient] is split for row in frame]] if len(frame) else positions
            for split in SPLIT_ORDER}


def _images(table: Sequence[FrameRow], positions: np.ndarray) -> SplitImages:
    rows: dict[str, list[int]] = {}
    for position in positions.tolist():
        rows.setdefault(table[position].image, []).append(position)
    return SplitImages(tuple(rows), {image: tuple(found) for image, found in rows.items()})


def _positive(table: Sequence[FrameRow], images: SplitImages, image: str) -> bool:
    return any(table[position].positive for position in images.rows[image])


def _balanced(table: Sequence[FrameRow], train: SplitImages,
              generator: np.random.RandomState) -> tuple[SplitImages, tuple[str, ...]]:
    """MGCA's balanced training split: every positive image, then as many negatives drawn without replacement.

    `np.random.choice(unique negative ids, n_pos, replace=False)` (segmentation_dataset.py:52-61) keeps the
    drawn negatives in frame order after the positives (pd.concat([df_pos, df_neg])).
    """
    positives = [image for image in train.images if _positive(table, train, image)]
    negatives = [image for image in train.images if not _positive(table, train, image)]
    if len(positives) > len(negatives):
        raise ValueError(f"a balanced training split needs at least as many negative images ({len(negatives)}) "
                         f"as positive ones ({len(positives)})")
    drawn = set(np.asarray(negatives, dtype=object)[generator.choice(len(negatives), len(positives),
                                                                       replace=False)].tolist())
    kept = [*positives, *(image for image in negatives if image in drawn)]
    return (SplitImages(tuple(kept), {image: train.rows[image] for image in kept}),
            tuple(image for image in negatives if image not in drawn))


def _subset(table: Sequence[FrameRow], train_rows: np.ndarray, splits: Mapping[Split, SplitImages],
            task: TaskProtocol, pct: float) -> frozenset[str]:
    train = splits[Split.TRAIN]
    if task.subset.rule is SubsetRule.PANDAS_SAMPLE:
        if pct == 100:
            return frozenset(train.images)
        # DataFrame.sample(frac, random_state=seed): RandomState(seed).choice(n, round(frac * n), replace=False)
        chosen = np.random.RandomState(task.subset.seed).choice(len(train_rows), round(pct / 100 * len(train_rows)),
                                                                replace=False)
        return frozenset(table[train_rows[position]].image for position in chosen.tolist())
    # numpy-choice: one generator seeded before the training split's own draws (the balancing, where there is one)
    generator = np.random.RandomState(task.subset.seed)
    if task.split.balance is TrainingBalance.BALANCED:
        _balanced(table, _images(table, train_rows), generator)
        if pct == 100:
            return frozenset(train.images)
    chosen = generator.choice(len(train.images), int(pct / 100 * len(train.images)), replace=False)
    return frozenset(train.images[position] for position in chosen.tolist())
