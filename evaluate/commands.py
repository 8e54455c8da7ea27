"""What `adaptor evaluate classify` and `adaptor evaluate segment` compute, callable without the command line.

Each function opens a dataset's image store (checked against its manifest and, for Adaptor
features, against the store the Adaptor was trained on), runs the heads for every feature space
asked for, and returns the results for the caller to write. The CLI and the study runner
(`adaptor study run`) both call these, so a study's head is computed by exactly the code of the
stage command.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np

from adaptor_vlp.cache_schema import dataset_dir
from adaptor_vlp.cache_schema.manifest import read_manifest
from adaptor_vlp.evaluate.classify import ClassifySettings, UncertainPolicy, classification_targets, run_classification
from adaptor_vlp.evaluate.features import AdaptorRun, DatasetRows, open_dataset_rows, pooled_features
from adaptor_vlp.evaluate.heads import LabelStructure
from adaptor_vlp.evaluate.protocol_heads import protocol_classification_task, segmentation_recipe
from adaptor_vlp.evaluate.results import EvaluatedRun, FeatureSpace, RunContext
from adaptor_vlp.evaluate.segment import SegmentSettings, run_segmentation
from adaptor_vlp.protocols import HeadTask, Protocol


@dataclass(frozen=True)
class DatasetEvaluation:
    """The results of one command, and the store rows it left out by reason."""

    runs: list[EvaluatedRun]
    dropped: Mapping[str, int]


def classify_dataset(cache_dir: Path, dataset: str, vision: str, run: AdaptorRun | None,
                     spaces: Sequence[FeatureSpace], settings: ClassifySettings, task: LabelStructure | None = None,
                     labels: Sequence[str] | None = None, uncertain: UncertainPolicy = UncertainPolicy.ZEROS,
                     device: str = "cpu", protocol: Protocol | None = None) -> DatasetEvaluation:
    """A head per (fraction, feature space) on the dataset's `vision` store; `run` is needed for Adaptor features.

    With `protocol`, its classification task for the manifest's dataset decides the head, recipe and subsets, and
    a task with a class vocabulary (COVIDx) is multi-class over exactly those classes.
    """
    rows = _rows(cache_dir, dataset, vision, run, spaces)
    if protocol is not None:
        protocol_task = protocol_classification_task(protocol, rows)
        settings = replace(settings, protocol=protocol_task)
        if protocol_task.classes:
            task, labels = LabelStructure.MULTICLASS, list(protocol_task.classes)
    targets = classification_targets(rows, task, labels, uncertain)
    adaptor = run if FeatureSpace.ADAPTOR in spaces else None
    features = {space: pooled_features(rows, np.arange(len(rows)), space, adaptor, device) for space in spaces}
    contexts = {space: _context(dataset, rows, run, space) for space in spaces}
    return DatasetEvaluation(run_classification(rows, targets, features, contexts, settings), rows.dropped)


def segment_dataset(cache_dir: Path, dataset: str, vision: str, run: AdaptorRun | None,
                    spaces: Sequence[FeatureSpace], settings: SegmentSettings, device: str = "cpu",
                    protocol: Protocol | None = None, keep_recipe: Collection[str] = ()) -> DatasetEvaluation:
    """A decoder per (fraction, feature space) on the dataset's `vision` store's patch tokens (or feature maps, for
    the U-Net), raw or through `run`.

    The store is the plain one when the recipe's `image_size` is None, else the segmentation store of that size
    (the whole image at 896 px, say; the Adaptor may have trained in another frame). With `protocol`, its
    segmentation task for the manifest's dataset decides the training subsets and the decoder's recipe, input
    size included (`protocol_heads.segmentation_recipe`), but for the recipe fields named in `keep_recipe`,
    which stay `settings.recipe`'s (a study's own `epochs`, `decoder`, `batch_size`, `image_size`, `views`).
    """
    if protocol is not None:
        manifest = read_manifest(dataset_dir(cache_dir, dataset))
        task = protocol.task(manifest.dataset, HeadTask.SEGMENT)
        settings = replace(settings, protocol=task, recipe=segmentation_recipe(task, settings.recipe, keep_recipe))
    rows = _rows(cache_dir, dataset, vision, run, spaces, settings.recipe.image_size)
    runs = []
    for space in spaces:
        adaptor = run if space is FeatureSpace.ADAPTOR else None
        runs += run_segmentation(rows, _context(dataset, rows, run, space), settings, adaptor, device)
    return DatasetEvaluation(runs, rows.dropped)


def _rows(cache_dir: Path, dataset: str, vision: str, run: AdaptorRun | None,
          spaces: Sequence[FeatureSpace], segmentation_size: int | None = None) -> DatasetRows:
    if FeatureSpace.ADAPTOR in spaces and run is None:
        raise ValueError("Adaptor features need a trained Adaptor: pass --run RUN_DIR")
    return open_dataset_rows(cache_dir, dataset, vision, run if FeatureSpace.ADAPTOR in spaces else None,
                             segmentation_size)


def _context(dataset: str, rows: DatasetRows, run: AdaptorRun | None, space: FeatureSpace) -> RunContext:
    adaptor = run.reference() if space is FeatureSpace.ADAPTOR and run is not None else None
    return RunContext(dataset, {"image": rows.store.provenance.to_json()}, adaptor)
