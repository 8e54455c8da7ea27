"""Segmentation from cached patch tokens at 1, 10 and 100% of the training split, Dice and IoU with intervals.

A decoder (`fit_segmentation_head`, built and trained as the `SegmentationProtocol` says: by default
the published decoder, loss and schedule) learns masks from patch tokens of an image store
extracted with `--tokens`, and the published U-Net from a CNN's cached feature maps
(`--feature-maps`, `evaluate.skip_maps`). The store is the plain one, or the segmentation store of
the recipe's `image_size` (the whole image at the task's size, `extract images --segmentation-size`).
The decoder reads the frozen backbone's own tokens (the baseline), or, as the paper segments, those
tokens after the trained Adaptor's image path (projection, then the blocks over each image's own
tokens; `Adaptor.encode_image_tokens`). Masks come from the manifest's target
strings, so no image is read. A mask is brought into the token grid's frame the way the extract
stage brought the image into the backbone's: the same centre crop to a square (or none, for
squashed inputs), then a nearest-neighbour resize to the scored size: by default, for the published
decoder, the store's input image size, where the published code scored its masks (the decoder's logits
are resized to it when its own output differs); for the light decoder, its own output size. A
recipe with K views trains either decoder on the K augmented view stores (`extract images
--segmentation-views K`, `evaluate.segmentation_views`), each mask warped as its image was, one view per epoch.

Dice and IoU are reported over all scorable images and over positive images only (see
`evaluate.metrics.segmentation_report`), each with a 95% bootstrap interval over patients; the
per-image scores come from `segmentation_report` applied to each image on its own, so the point
values are exactly its averages. `dice_published` is the published code's Dice, where an image
whose mask and prediction are both empty scores 1: reported only to compare with published
tables (predicting nothing scores the share of empty masks, recorded beside it), never as the
headline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch.nn import functional

from adaptor_vlp.cache_schema import ArrayName, StoreError
from adaptor_vlp.cache_schema.geometry import mask_through_geometry
from adaptor_vlp.cache_schema.targets import decode_mask
from adaptor_vlp.evaluate.bootstrap import ConfidenceInterval, bootstrap_ci
from adaptor_vlp.evaluate.classify import TEST_SPLIT, TRAIN_SPLIT, VALIDATION_SPLIT
from adaptor_vlp.evaluate.features import AdaptorRun, DatasetRows, adaptor_token_embeddings
from adaptor_vlp.evaluate.metrics import segmentation_report
from adaptor_vlp.evaluate.protocol_heads import check_manifest_protocol, protocol_subset
from adaptor_vlp.evaluate.results import EvaluatedRun, EvaluationTask, FeatureSpace, ResultRecord, RunContext
from adaptor_vlp.evaluate.segmentation_decoders import decoder_output_size
from adaptor_vlp.evaluate.segmentation_head import fit_segmentation_head
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName, SegmentationProtocol
from adaptor_vlp.evaluate.segmentation_views import open_view_rows, warped_masks
from adaptor_vlp.evaluate.skip_maps import SkipMapRows, fit_unet_segmenter, skip_map_rows, unet_geometry
from adaptor_vlp.protocols import TaskProtocol

METHOD = "decoder"

InputRows = np.ndarray | SkipMapRows
"""What a decoder reads for some rows: (N, T, D) patch tokens, or the U-Net's pooled embeddings and maps."""


class SegmentationError(ValueError):
    """The dataset cannot be segmented: no token cache, a non-square token grid, no masks, an empty split."""


@dataclass(frozen=True)
class SegmentSettings:
    """Training fractions (percent), the seed, bootstrap resamples, the decoder's recipe, mask size, overlays kept,
    and the downstream protocol whose subsets it trains on.

    `mask_size` None is, for the published decoder, the store's input image size (`preprocessing.image_size`),
    where the published code scored masks; for the light decoder its own output size.
    """

    fractions: tuple[float, ...] = (1.0, 10.0, 100.0)
    seed: int = 0
    n_resamples: int = 1000
    recipe: SegmentationProtocol = SegmentationProtocol()
    """How the decoder trains: decoder, loss, optimiser, schedule, epochs, views (the published SIIM run by default)."""
    mask_size: int | None = None
    n_overlays: int = 4
    protocol: TaskProtocol | None = None
    """A protocol's segmentation task: its training subsets (recorded in the manifest, or per seed) are used."""
    unet_width_divisor: int | None = None
    """None: the token decoder on patch tokens. An integer: the published ResNet-AE U-Net over the store's
    feature maps (`--feature-maps`), its widths divided by it (1 is the published model)."""


def token_grid(rows: DatasetRows) -> int:
    """The side of the square patch grid the store's tokens form."""
    if not rows.store.has(ArrayName.TOKENS):
        raise SegmentationError(f"{rows.store.path} holds no patch tokens; extract the images with --tokens")
    count = rows.store.features.token_count
    grid = math.isqrt(count)
    if grid * grid != count:
        raise SegmentationError(f"{rows.store.path}: {count} tokens per image do not form a square grid")
    return grid


def aligned_masks(rows: DatasetRows, positions: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) boolean masks of the rows at `positions`, in the frame of the backbone's input."""
    geometry = rows.store.provenance.to_json()["preprocessing"].get("geometry")
    if not isinstance(geometry, list):
        raise SegmentationError(f"{rows.store.path} records no image geometry (preprocessing.geometry); "
                                "re-extract it to align masks with its tokens")
    masks = np.empty((len(positions), size, size), dtype=bool)
    for index, position in enumerate(positions):
        mask = mask_through_geometry(decode_mask(str(rows.mask_targets[position])), geometry)
        masks[index] = _resize_nearest(mask, size)
    return masks


def run_segmentation(rows: DatasetRows, context: RunContext, settings: SegmentSettings,
                     adaptor: AdaptorRun | None = None, device: str = "cpu") -> list[EvaluatedRun]:
    """Fits and scores one decoder per training fraction on the rows that have a mask target.

    Without `adaptor` the decoder reads the backbone's patch tokens (feature space "backbone");
    with it, the tokens after that Adaptor's image path (feature space "adaptor").
    """
    space = FeatureSpace.BACKBONE if adaptor is None else FeatureSpace.ADAPTOR
    unet = settings.unet_width_divisor is not None
    if unet:
        width = rows.store.features.embedding_dim if adaptor is None else adaptor.loaded.model.config.projection_dim
        geometry = replace(unet_geometry(rows.store, width), width_divisor=settings.unet_width_divisor)
    grid = None if unet else token_grid(rows)
    if not unet and adaptor is not None and rows.store.features.token_dim != adaptor.loaded.model.config.image_dim:
        raise SegmentationError(f"{rows.store.path}: its patch tokens are {rows.store.features.token_dim} wide but the "
                                f"Adaptor of {adaptor.run_dir} projects {adaptor.loaded.model.config.image_dim}-wide "
                                "image features; segment through an Adaptor trained on this backbone's features")

    def inputs(source: DatasetRows, positions: np.ndarray) -> InputRows:
        if unet:
            return skip_map_rows(source, positions, adaptor, device)
        return _decoder_inputs(source, positions, adaptor, device)

    default_size = geometry.input_size if unet else _default_mask_size(rows, settings.recipe.decoder, grid)
    size = settings.mask_size or default_size
    has_mask = rows.mask_targets != ""
    if not has_mask.any():
        raise SegmentationError(f"the {rows.manifest.dataset} manifest has no mask targets; segmentation needs "
                                "a reader that writes them (SIIM-ACR, RSNA boxes)")
    train, val, test = (np.intersect1d(rows.positions(split), np.flatnonzero(has_mask))
                        for split in (TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT))
    for split, positions in ((TRAIN_SPLIT, train), (VALIDATION_SPLIT, val), (TEST_SPLIT, test)):
        if len(positions) == 0:
            raise SegmentationError(f"the {rows.manifest.dataset} dataset has no '{split}' rows with a mask target")
    view_rows = open_view_rows(rows, settings.recipe.views)
    val_tokens, val_masks = inputs(rows, val), aligned_masks(rows, val, size)
    test_tokens, test_masks = inputs(rows, test), aligned_masks(rows, test, size)
    dropped = {**rows.dropped, "no mask target": int((~has_mask).sum())}
    record = check_manifest_protocol(rows, settings.protocol) if settings.protocol else None
    runs = []
    for pct in settings.fractions:
        if settings.protocol:
            chosen, subset = protocol_subset(rows, train, pct, settings.protocol, record, settings.seed)
        else:
            chosen, subset = rows.training_subset(train, pct, settings.seed)
        record_fields = dict(task=EvaluationTask.SEGMENT, context=context, feature_space=space,
                             method=METHOD, split=TEST_SPLIT, data_pct=pct, subset=subset.to_json(),
                             seed=settings.seed, headline="dice_positive")
        details = {"grid": grid, "mask_size": size, "decoder": "unet" if unet else settings.recipe.decoder.value,
                   "recipe": settings.recipe.to_json(), "n_train": len(chosen), "n_validate": len(val),
                   "n_test": len(test), "n_test_positive": int(test_masks.any(axis=(1, 2)).sum()),
                   "dice_published_predicting_nothing": float((~test_masks.any(axis=(1, 2))).mean()),
                   "rows_dropped": dropped}
        arrays = {"subset_ids": rows.ids[chosen]}
        if len(chosen) < 2:
            skipped = f"the subset holds {len(chosen)} training row; the decoder needs at least 2"
            runs.append(EvaluatedRun(ResultRecord(**record_fields, metrics={}, details=details, skipped=skipped),
                                     arrays))
            continue
        train_inputs, train_masks = _training_views(rows, view_rows, chosen, size, inputs)
        if unet:
            segmenter = fit_unet_segmenter(train_inputs, train_masks, val_tokens, val_masks, geometry, size,
                                           settings.seed, settings.recipe)
        else:
            segmenter = fit_segmentation_head(np.stack(train_inputs), np.stack(train_masks), val_tokens, val_masks,
                                              grid=grid, out_size=size, seed=settings.seed, protocol=settings.recipe)
        predicted = segmenter.predict_masks(test_tokens)
        per_image = _per_image_scores(predicted, test_masks)
        metrics = _metrics(per_image, predicted, rows.subjects[test], settings)
        arrays.update({"test_ids": rows.ids[test], "test_dice": per_image.dice, "test_iou": per_image.iou,
                       "test_positive": per_image.positive})
        details["training"] = {"best_epoch": segmenter.training.best_epoch,
                               "epochs_run": segmenter.training.epochs_run,
                               "validated_epochs": list(segmenter.training.validated_epochs),
                               "best_validation_score": segmenter.training.best_score}
        shown = _overlay_positions(test_masks, settings.n_overlays)
        arrays.update({"overlay_ids": rows.ids[test][shown], "overlay_truth": test_masks[shown],
                       "overlay_predicted": predicted[shown]})
        runs.append(EvaluatedRun(ResultRecord(**record_fields, metrics=metrics, details=details), arrays))
    return runs


@dataclass(frozen=True)
class PerImageScores:
    """Each test image's Dice and IoU (NaN where undefined: both masks empty), the published Dice (1 there), and
    whether its true mask is positive."""

    dice: np.ndarray
    iou: np.ndarray
    dice_published: np.ndarray
    positive: np.ndarray


def _per_image_scores(predicted: np.ndarray, truth: np.ndarray) -> PerImageScores:
    reports = [segmentation_report(predicted[[index]], truth[[index]]) for index in range(len(truth))]
    return PerImageScores(
        dice=np.array([report.dice_all for report in reports]),
        iou=np.array([report.iou_all for report in reports]),
        dice_published=np.array([1.0 if report.n_empty_gt_predicted_empty else report.dice_all for report in reports]),
        positive=np.array([report.n_positive == 1 for report in reports]),
    )


def _metrics(scores: PerImageScores, predicted: np.ndarray, groups: np.ndarray,
             settings: SegmentSettings) -> dict[str, ConfidenceInterval]:
    """Dice, IoU, the empty-mask false-positive rate and the published Dice, each averaged over its population,
    with intervals."""
    dice, iou, dice_published, positive = scores.dice, scores.iou, scores.dice_published, scores.positive
    predicted_any = predicted.any(axis=(1, 2))

    def interval(metric: Callable[..., float], *arrays: np.ndarray) -> ConfidenceInterval:
        return bootstrap_ci(metric, *arrays, n_resamples=settings.n_resamples, seed=settings.seed, groups=groups)

    return {
        "dice_all": interval(_mean_defined, dice),
        "iou_all": interval(_mean_defined, iou),
        "dice_positive": interval(_mean_where, dice, positive),
        "iou_positive": interval(_mean_where, iou, positive),
        "empty_gt_false_positive_rate": interval(_mean_where, predicted_any.astype(float), ~positive),
        "dice_published": interval(_mean_defined, dice_published),
    }


def _training_views(rows: DatasetRows, view_rows: list[DatasetRows], positions: np.ndarray, size: int,
                    inputs_of: Callable[[DatasetRows, np.ndarray], InputRows],
                    ) -> tuple[list[InputRows], list[np.ndarray]]:
    """The decoder's training inputs and (N, H, W) masks, one entry per view: the unwarped store's alone, or with
    augmented views, view k's inputs with its masks warped as its images were."""
    masks = aligned_masks(rows, positions, size)
    if not view_rows:
        return [inputs_of(rows, positions)], [masks]
    return ([inputs_of(view, positions) for view in view_rows],
            [warped_masks(masks, rows.ids[positions], index) for index in range(1, len(view_rows) + 1)])


def _default_mask_size(rows: DatasetRows, decoder: DecoderName, grid: int) -> int:
    """The published decoder's masks at the store's input size, where the published code scored them; another
    decoder's at its own output size (the light one: 4 px per token), which keeps a quick run quick."""
    return _image_size(rows) if decoder is DecoderName.PUBLISHED_VIT else decoder_output_size(decoder, grid)


def _image_size(rows: DatasetRows) -> int:
    """The side of the square image the store's backbone read (`preprocessing.image_size`)."""
    size = rows.store.provenance.to_json()["preprocessing"].get("image_size")
    if not isinstance(size, int) or size < 1:
        raise SegmentationError(f"{rows.store.path} records no input image size (preprocessing.image_size); "
                                "pass --mask-size or re-extract it")
    return size


def _mean_defined(values: np.ndarray) -> float:
    """Mean of the non-NaN values (images where the score is defined); NaN when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _mean_where(values: np.ndarray, selected: np.ndarray) -> float:
    """Mean of the selected values; NaN when none is selected."""
    return float(values[selected].mean()) if selected.any() else math.nan


def _decoder_inputs(rows: DatasetRows, positions: np.ndarray, adaptor: AdaptorRun | None, device: str) -> np.ndarray:
    """(N, T, D) tokens the decoder reads: the store's patch tokens, or their per-token Adaptor embeddings."""
    tokens = _tokens(rows, positions)
    if adaptor is None:
        return tokens
    mask = rows.store.read(ArrayName.TOKEN_MASK, rows.rows[positions])
    return adaptor_token_embeddings(adaptor, tokens, mask, device)


def _tokens(rows: DatasetRows, positions: np.ndarray) -> np.ndarray:
    tokens = rows.store.read(ArrayName.TOKENS, rows.rows[positions])
    if not np.isfinite(tokens.sum(axis=(1, 2), dtype=np.float64)).all():
        raise StoreError(f"{rows.store.path}: rows marked valid hold NaN or infinite tokens; "
                         "run `adaptor cache verify` and re-extract")
    return tokens


def _resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Each output pixel takes the input pixel under its centre."""
    resized = functional.interpolate(torch.from_numpy(mask)[None, None].to(torch.uint8), size=(size, size),
                                     mode="nearest-exact")
    return resized[0, 0].numpy().astype(bool)


def _overlay_positions(truth: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` test images to draw: positives first (in id order), then empty ones."""
    positive = truth.any(axis=(1, 2))
    return np.concatenate([np.flatnonzero(positive), np.flatnonzero(~positive)])[:count]
