"""Zero-shot classification: images scored against class prompts by cosine similarity in Adaptor space.

The evaluate stage never runs a backbone, so prompts reach it like any text: as a tiny dataset
whose manifest has one row per prompt (`CACHE/prompts-<name>/manifest.csv`), embedded once by
`adaptor extract texts --dataset prompts-<name> --backbone TEXT` into
`CACHE/prompts-<name>/text/<TEXT>.zarr`. Zero-shot scoring then runs both the images and the
prompt embeddings through the Adaptor and compares them.

A prompts file (TOML) has a `[classes."<label name>"]` table per class with a `positive` prompt
and, for multi-label tasks, a `negative` one: a class's score is the softmax over its
(positive, negative) pair of similarities. When no class has a negative prompt the classes are
one multi-class choice, scored by the softmax over the classes. Similarities are scaled by the
Adaptor's learned logit scale, as in its training loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import tomllib

from adaptor_vlp.cache_schema import CacheStore, Modality, ProvenanceMismatch, StoreError, dataset_dir
from adaptor_vlp.cache_schema.manifest import (
    Manifest,
    ManifestRow,
    Split,
    manifest_sha256,
    read_manifest,
    write_manifest,
)
from adaptor_vlp.evaluate.classify import classification_targets, metrics_with_intervals
from adaptor_vlp.evaluate.features import (
    AdaptorRun,
    adaptor_embeddings,
    open_dataset_rows,
    open_store_for,
    pooled_features,
)
from adaptor_vlp.evaluate.heads import LabelStructure
from adaptor_vlp.evaluate.results import EvaluatedRun, EvaluationTask, FeatureSpace, ResultRecord, RunContext

DEFAULT_PROMPTS = Path(__file__).with_name("chexpert_prompts.toml")
"""Positive and negative prompts for the 14 CheXpert labels."""

PROMPTS_DATASET_PREFIX = "prompts-"
ROLE_SEPARATOR = "|"
PROMPT_SUBJECT = "prompts"


class PromptError(ValueError):
    """A prompts file or prompt store that cannot be used: malformed, not embedded yet, or not matching the labels."""


class PromptScoring(str, Enum):
    """Per class, positive against negative prompt (multi-label); or one choice among the classes (multi-class)."""

    PAIRS = "pairs"
    CLASSES = "classes"


class PromptRole(str, Enum):
    """Whether a prompt states the class's finding or its absence."""

    POSITIVE = "positive"
    NEGATIVE = "negative"


@dataclass(frozen=True)
class ClassPrompts:
    """One class's prompts; `negative` is None in multi-class prompt sets."""

    name: str
    positive: str
    negative: str | None


@dataclass(frozen=True)
class PromptSet:
    """The classes of a prompts file, in file order, and how they are scored."""

    classes: tuple[ClassPrompts, ...]

    @property
    def scoring(self) -> PromptScoring:
        return PromptScoring.PAIRS if self.classes[0].negative is not None else PromptScoring.CLASSES

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.classes)

    def prompts(self) -> list[tuple[str, str]]:
        """(prompt id, text) in order: per class its positive prompt, then its negative one when it has one."""
        pairs = []
        for entry in self.classes:
            pairs.append((prompt_id(entry.name, PromptRole.POSITIVE), entry.positive))
            if entry.negative is not None:
                pairs.append((prompt_id(entry.name, PromptRole.NEGATIVE), entry.negative))
        return pairs


@dataclass(frozen=True)
class ZeroShotSettings:
    """The split scored and the seed and resample count of the bootstrap."""

    split: str = "test"
    seed: int = 0
    n_resamples: int = 1000


def prompt_id(class_name: str, role: PromptRole) -> str:
    """A prompt's row id in the prompt store, e.g. 'Edema|negative'."""
    return f"{class_name}{ROLE_SEPARATOR}{role.value}"


def prompt_dataset(name: str) -> str:
    """The cache dataset name of a prompt set, e.g. 'prompts-chexpert'."""
    return f"{PROMPTS_DATASET_PREFIX}{name}"


def read_prompts(path: Path) -> PromptSet:
    """The prompt set of a TOML file; raises PromptError naming the file and the class at fault."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"{path}: prompts file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PromptError(f"{path}: not a valid TOML file ({error})") from None
    table = document.get("classes")
    if not isinstance(table, dict) or not table:
        raise PromptError(f'{path}: no [classes."<label name>"] tables; see {DEFAULT_PROMPTS} for the format')
    classes = tuple(_class_prompts(path, name, entry) for name, entry in table.items())
    with_negative = [entry.negative is not None for entry in classes]
    if any(with_negative) and not all(with_negative):
        missing = [entry.name for entry in classes if entry.negative is None]
        raise PromptError(f"{path}: classes {missing} have no negative prompt while others do; give every class "
                          "a negative (multi-label pairs) or none (one multi-class choice)")
    if not any(with_negative) and len(classes) < 2:
        raise PromptError(f"{path}: a multi-class prompt set needs at least 2 classes, or give negative prompts")
    return PromptSet(classes)


def write_prompt_manifest(cache_dir: Path, name: str, prompts_file: Path) -> Path:
    """Writes the manifest of a prompt set (one row per prompt, its text as the report) for the extract stage."""
    prompts = read_prompts(prompts_file)
    rows = tuple(
        ManifestRow(dicom_id=row_id, study_id=row_id, subject_id=PROMPT_SUBJECT, split=Split.TEST, view="",
                    image_path="", report_text=text, report_issue="", labels={})
        for row_id, text in prompts.prompts())
    folder = Path(prompts_file).resolve().parent
    manifest = Manifest(dataset=prompt_dataset(name), image_root=folder, reports_root=folder, rows=rows,
                        options={"prompts_file": str(Path(prompts_file).resolve()),
                                 "scoring": prompts.scoring.value},
                        label_names=())
    return write_manifest(manifest, dataset_dir(cache_dir, prompt_dataset(name)))


def read_prompt_manifest(cache_dir: Path, name: str) -> PromptSet:
    """The prompt set a prompt manifest was written from (by `write_prompt_manifest`)."""
    folder = dataset_dir(cache_dir, prompt_dataset(name))
    manifest = read_manifest(folder)
    texts = {row.dicom_id: row.report_text for row in manifest.rows}
    names = list(dict.fromkeys(row.dicom_id.rsplit(ROLE_SEPARATOR, 1)[0] for row in manifest.rows))
    expected = {prompt_id(class_name, role) for class_name in names for role in PromptRole}
    if not set(texts) <= expected or any(prompt_id(class_name, PromptRole.POSITIVE) not in texts
                                         for class_name in names):
        raise PromptError(f"{folder}: not a prompt manifest (ids must be '<class>|positive' and "
                          "'<class>|negative'); write it with `adaptor evaluate prompts`")
    return PromptSet(tuple(ClassPrompts(class_name, texts[prompt_id(class_name, PromptRole.POSITIVE)],
                                        texts.get(prompt_id(class_name, PromptRole.NEGATIVE)))
                           for class_name in names))


def run_zeroshot(cache_dir: Path, dataset: str, prompts_name: str, run: AdaptorRun, settings: ZeroShotSettings,
                 device: str = "cpu") -> EvaluatedRun:
    """Scores the dataset's `settings.split` images against the embedded prompt set through the Adaptor."""
    prompts = read_prompt_manifest(cache_dir, prompts_name)
    rows = open_dataset_rows(cache_dir, dataset, run.trained_on(Modality.IMAGE)["backbone"], run)
    prompt_store = _open_prompt_store(cache_dir, prompts_name, run)
    ids = [row_id for row_id, _ in prompts.prompts()]
    try:
        prompt_rows = prompt_store.rows_for_ids(ids)
    except KeyError as error:
        raise PromptError(f"{error.args[0]}; re-extract the prompt store with --overwrite") from None
    unusable = [row_id for row_id, valid in zip(ids, prompt_store.valid[prompt_rows]) if not valid]
    if unusable:
        raise PromptError(f"{prompt_store.path}: prompts {unusable} were not embedded; see `adaptor cache verify`")
    multiclass = prompts.scoring is PromptScoring.CLASSES
    task = LabelStructure.MULTICLASS if multiclass else LabelStructure.MULTILABEL
    targets = classification_targets(rows, task, prompts.class_names)
    test = rows.positions(settings.split)
    if len(test) == 0:
        raise PromptError(f"{rows.store.path} has no valid '{settings.split}' rows to score")
    images = pooled_features(rows, test, FeatureSpace.ADAPTOR, run, device)
    prompt_embeddings = adaptor_embeddings(prompt_store, prompt_rows, run, device)
    logit_scale = float(run.loaded.model.clamped_logit_scale().detach().exp())
    scores = prompt_scores(images, prompt_embeddings, prompts.scoring, logit_scale)
    truth = targets.scored[test]
    metrics, not_scored = metrics_with_intervals(task, truth, scores, prompts.class_names, rows.subjects[test],
                                                 settings.n_resamples, settings.seed)
    context = RunContext(dataset, {"image": rows.store.provenance.to_json(),
                                   "text": prompt_store.provenance.to_json()}, run.reference())
    details = {"prompts": dict(prompts.prompts()), "scoring": prompts.scoring.value, "logit_scale": logit_scale,
               "n_test": len(test), "labels_not_scored": not_scored, "rows_dropped": dict(rows.dropped),
               "uncertain_labels": "not scored"}
    record = ResultRecord(task=EvaluationTask.ZEROSHOT, context=context, feature_space=FeatureSpace.ADAPTOR,
                          method=prompts_name, split=settings.split, data_pct=None, subset=None, seed=settings.seed,
                          headline="accuracy" if multiclass else "macro_auroc", metrics=metrics, details=details)
    arrays = {"test_ids": rows.ids[test], "test_targets": truth, "test_scores": scores,
              "label_names": np.array(prompts.class_names)}
    return EvaluatedRun(record, arrays)


def prompt_scores(images: np.ndarray, prompt_embeddings: np.ndarray, scoring: PromptScoring,
                  logit_scale: float) -> np.ndarray:
    """(N, classes) scores of unit-norm Adaptor-space images against prompt embeddings in `PromptSet.prompts` order.

    PAIRS: per class, the softmax of its (positive, negative) similarities, the positive's share.
    CLASSES: the softmax over the classes. Similarities are scaled by the Adaptor's logit scale.
    """
    logits = logit_scale * images.astype(np.float64) @ prompt_embeddings.astype(np.float64).T
    if scoring is PromptScoring.CLASSES:
        return _softmax(logits)
    return _softmax(logits.reshape(len(images), -1, 2))[..., 0]


def _class_prompts(path: Path, name: str, entry: object) -> ClassPrompts:
    if not name.isascii() or ROLE_SEPARATOR in name or not name.strip():
        raise PromptError(f"{path}: class name {name!r} must be non-empty ASCII without {ROLE_SEPARATOR!r}")
    if not isinstance(entry, dict):
        raise PromptError(f'{path}: [classes."{name}"] must be a table with positive (and negative) prompts')
    unknown = sorted(set(entry) - {role.value for role in PromptRole})
    if unknown:
        raise PromptError(f'{path}: [classes."{name}"] has unknown keys {unknown}; use positive and negative')
    texts = {}
    for role in PromptRole:
        text = entry.get(role.value)
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise PromptError(f'{path}: [classes."{name}"] {role.value} must be a non-empty string')
        texts[role] = text
    if texts[PromptRole.POSITIVE] is None:
        raise PromptError(f'{path}: [classes."{name}"] has no positive prompt')
    return ClassPrompts(name, texts[PromptRole.POSITIVE], texts[PromptRole.NEGATIVE])


def _open_prompt_store(cache_dir: Path, name: str, run: AdaptorRun) -> CacheStore:
    """The prompt set's store for the Adaptor's text backbone, built from the current prompt manifest."""
    text_backbone = run.trained_on(Modality.TEXT)["backbone"]
    try:
        store = open_store_for(cache_dir, prompt_dataset(name), Modality.TEXT, text_backbone, run)
    except StoreError as error:
        raise PromptError(f"{error}. Embed the prompts first: adaptor extract texts --cache {cache_dir} "
                          f"--dataset {prompt_dataset(name)} --backbone {text_backbone}") from None
    found_sha = manifest_sha256(dataset_dir(cache_dir, prompt_dataset(name)))
    if store.provenance.manifest_sha256 != found_sha:
        raise ProvenanceMismatch(str(store.path), "manifest_sha256", found_sha, store.provenance.manifest_sha256)
    return store


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
