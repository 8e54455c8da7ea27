"""`adaptor export`: a trained run as one self-contained folder in the layout Hugging Face tooling expects.

OUT/config.json    the Adaptor's configuration, the recipe, the chosen epoch and its validation
                   metrics, the training data (manifest hash, rows, split), and per modality the
                   backbone's registry entry as resolved now and the provenance its store recorded
                   (weights identifier and SHA-256, preprocessing and tokenizer settings);
OUT/model.safetensors  the Adaptor's weights alone;
OUT/README.md      a model card generated from those records (`inference.model_card`).
No pickle and no absolute path: the folder can be copied anywhere and shared.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from safetensors.torch import save

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.cache_schema.writes import write_together, writing
from adaptor_vlp.evaluate.results import FeatureSpace, ResultError, StoredResult, read_results
from adaptor_vlp.extract.backbones import BackboneSpec, UnknownBackbone, get_spec
from adaptor_vlp.extract.image_transforms import image_preprocessing
from adaptor_vlp.inference.model_card import model_card
from adaptor_vlp.inference.record import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelFolderError,
    ModelRecord,
    adaptor_weights,
    read_model,
)
from adaptor_vlp.train.checkpoint import CheckpointKind, read_record
from adaptor_vlp.train.loop import read_completed
from adaptor_vlp.train.model import Adaptor
from adaptor_vlp.train.recipe import Selection

EVALUATION_FOLDER = "evaluation"
"""Where `make evaluate` writes a run's results (RUN/evaluation); read unless --results names another folder."""


def export_run(run_dir: Path, out: Path, kind: CheckpointKind = CheckpointKind.BEST,
               results: Path | None = None, registry: Sequence[Path] = ()) -> Path:
    """Writes the export of a run folder's `kind` checkpoint into `out`; returns `out`.

    `results` is a folder of evaluation results (`adaptor evaluate ... --out`, or a study's
    `results/`; default RUN/evaluation when it exists): those made with exactly these weights go
    into the card.
    `registry` are the registry files that define the run's backbones, when not built in.
    """
    run_dir = Path(run_dir)
    record, adaptor = read_model(run_dir, kind)
    if not (run_dir / CONFIG_FILE).is_file():
        sha256 = read_record(run_dir, kind).weights_sha256
        folder = results if results is not None else run_dir / EVALUATION_FOLDER
        record = dataclasses.replace(
            record, backbone_entries={modality: registry_entry(resolved_spec(provenance, registry))
                                      for modality, provenance in record.provenance.items()},
            evaluation=evaluation_summaries(folder, sha256, required=results is not None))
    return write_export(record, adaptor, Path(out))


def write_export(record: ModelRecord, adaptor: Adaptor, out: Path) -> Path:
    """Writes config.json, model.safetensors and README.md into `out`, all or none (`write_together`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ModelFolderError(f"{out}: exists and is not a folder; name a new folder for the export")
    foreign = sorted(path.name for path in out.iterdir()
                     if path.name not in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)) if out.is_dir() else []
    if foreign:
        raise ModelFolderError(f"{out}: holds other files ({', '.join(foreign[:3])}); export into a new or empty "
                               "folder (a previous export there is replaced)")
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    config = json.dumps(record.to_json(), indent=1, sort_keys=False) + "\n"
    write_together({
        out / WEIGHTS_FILE: save(adaptor_weights(adaptor), metadata={"format": "pt"}),
        out / CONFIG_FILE: config.encode("utf-8"),
        out / CARD_FILE: model_card(record).encode("utf-8"),
    })
    return out


def best_run(folder: Path, selection: Selection | None = None) -> Path:
    """The finished run folder under `folder` with the best validation result at its best epoch.

    Runs are compared by `selection`'s metric (default: the recipe's own selection, which must
    then agree among the runs), ties broken by name; runs still training are left out.
    """
    folder = Path(folder)
    finished = [(run, result) for run in sorted(path for path in folder.iterdir() if path.is_dir())
                if (result := read_completed(run)) is not None] if folder.is_dir() else []
    if not finished:
        raise ModelFolderError(f"{folder}: holds no finished run folder (one with completed.json); train first")
    if selection is None:
        chosen = {read_record(run, CheckpointKind.BEST).record.recipe["select_by"] for run, _ in finished}
        if len(chosen) > 1:
            raise ModelFolderError(f"{folder}: its runs pick their best epoch by different metrics ({sorted(chosen)}); "
                                   "say which to compare with --select-by")
        selection = Selection(chosen.pop())
    sign = -1.0 if selection is Selection.RECALL else 1.0
    return min(finished, key=lambda pair: (sign * pair[1].best_metrics[selection.metric], pair[0].name))[0]


def resolved_spec(provenance: Mapping[str, Any], registry: Sequence[Path] = ()) -> BackboneSpec:
    """The registry entry of a store's backbone as this machine resolves it, checked against what the store recorded."""
    modality = Modality(provenance["modality"])
    name = provenance["backbone"]
    preprocessing = provenance["preprocessing"]
    try:
        spec = get_spec(name, tuple(registry), modality, preprocessing.get("max_length"))
    except UnknownBackbone as error:
        raise ModelFolderError(f"{error}; pass the registry file that defines it (--registry)") from None
    recorded = {"weights_id": provenance["weights_id"], "pooling": provenance["pooling"]}
    resolved = {"weights_id": spec.weights_id, "pooling": spec.pooling.value}
    if modality is Modality.IMAGE:
        recorded.update({key: preprocessing.get(key) for key in image_preprocessing(spec)})
        resolved.update(json.loads(json.dumps(image_preprocessing(spec))))
    differing = [key for key in resolved if resolved[key] != recorded[key]]
    if differing:
        key = differing[0]
        raise ModelFolderError(f"backbone {name!r}: its registry entry here gives {key} = {resolved[key]!r}, but the "
                               f"store recorded {recorded[key]!r}; export with the registry the cache was built with")
    return spec


def registry_entry(spec: BackboneSpec) -> dict[str, Any]:
    """A spec in the shape of a registry table (`[backbones.NAME]`), with its name; unset fields left out."""
    values = json.loads(json.dumps(dataclasses.asdict(spec), default=_enum_value))
    image = values.get("image")
    if image is not None:
        image["steps"] = [{key: value for key, value in step.items() if value is not None} for step in image["steps"]]
    return {key: value for key, value in values.items() if value is not None and value != ""}


def evaluation_summaries(folder: Path, weights_sha256: str, required: bool = False) -> tuple[dict[str, Any], ...]:
    """One summary per result under `folder` made through these exact Adaptor weights.

    `folder` is a results folder (`adaptor evaluate ... --out`) or any folder above several (a
    study's `results/`, one per task and feature set). Without results there: none, or ResultError
    when `required`.
    """
    folder = Path(folder)
    holding = sorted({path.parent.parent for path in folder.rglob("*.json")}) if folder.is_dir() else []
    if not holding:
        if required:
            raise ResultError(f"{folder}: holds no evaluation results; give the folder `adaptor evaluate ... --out` "
                              "or `adaptor study run` wrote them into")
        return ()
    stored = [result for results_folder in holding for result in read_results(results_folder)]
    return tuple(_summary(result) for result in stored
                 if result.record.feature_space is FeatureSpace.ADAPTOR and result.record.context.adaptor
                 and result.record.context.adaptor.get("weights_sha256") == weights_sha256)


def _summary(stored: StoredResult) -> dict[str, Any]:
    record = stored.record
    headline = record.metrics.get(record.headline)
    return {"task": record.task.value, "dataset": record.context.dataset, "method": record.method,
            "split": record.split, "data_pct": record.data_pct, "seed": record.seed, "metric": record.headline,
            "value": _finite(headline and headline.point), "low": _finite(headline and headline.low),
            "high": _finite(headline and headline.high), "skipped": record.skipped}


def _finite(value: float | None) -> float | None:
    """The value, or None for a missing or undefined (NaN) one, so config.json stays strict JSON."""
    return None if value is None or math.isnan(value) else value


def _enum_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} into config.json")
