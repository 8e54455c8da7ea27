"""The README.md of an exported model: a model card written from the run's own records, nothing typed by hand.

The YAML header is the metadata block the Hugging Face hub reads (library, tags, license); the
body states the intended use (research, never clinical decisions), the backbones the model needs
with their weights' SHA-256, the training data and recipe, the chosen epoch's validation metrics,
any evaluation results made with these weights, and how to load the folder.
"""
from __future__ import annotations

from typing import Any, Mapping

from adaptor_vlp.inference.record import TRAINING_SPLIT, ModelRecord

INTENDED_USE = ("Research use only; not for clinical decisions. The model has not been validated for diagnosis, "
                "triage or any patient care, and its outputs must not inform them.")


def model_card(record: ModelRecord) -> str:
    """The card as Markdown with a YAML metadata header."""
    image, text = record.provenance["image"], record.provenance["text"]
    lines = [
        "---",
        "library_name: adaptor-vlp",
        "license: other",
        "tags: [chest-x-ray, vision-language, contrastive, frozen-backbones, research-only]",
        "---",
        "",
        f"# Adaptor {image['backbone']} + {text['backbone']} ({record.run_name})",
        "",
        "A vision-language Adaptor trained on frozen backbones from a cached embedding store (Qin et al., "
        "\"Freeze the backbones\", ICASSP 2024), exported by adaptor-vlp.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Backbones it needs",
        "",
        "| modality | backbone | weights | weights SHA-256 | pooling |",
        "|---|---|---|---|---|",
        *(f"| {modality} | {p['backbone']} | {p['weights_id']} | `{p['weights_sha256']}` | {p['pooling']} |"
          for modality, p in (("image", image), ("text", text))),
        "",
        "Loading refuses a backbone whose weights hash differently. Preprocessing and tokenizer settings are "
        "in `config.json` (`backbones.<modality>.provenance.preprocessing`).",
        "",
        "## Training data",
        "",
        f"- dataset: {image['dataset']}, split `{TRAINING_SPLIT}` (best epoch picked on `validate`)",
        f"- manifest SHA-256: `{image['manifest_sha256']}`",
        *_subset_lines(record.data_subset),
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in record.recipe.items()),
        "",
        "## Checkpoint and validation metrics",
        "",
        f"{record.checkpoint.value} checkpoint: epoch {record.epoch} (best epoch {record.best_epoch}), "
        f"{record.trainable_parameters:,} trainable parameters.",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {value:.4f} |" for name, value in record.metrics.items() if name.startswith("val_")),
        "",
        "## Evaluation results",
        "",
        *_evaluation_lines(record.evaluation),
        "",
        "## How to load",
        "",
        "```python",
        "from adaptor_vlp.inference import AdaptorModel",
        "",
        'model = AdaptorModel.from_pretrained("path/to/this/folder", device="cpu")',
        'scores = model.zeroshot(["radiograph.dcm"])  # CheXpert prompts',
        "```",
        "",
        "or `adaptor predict zeroshot --model path/to/this/folder --images FOLDER --out scores.csv`.",
        "",
    ]
    return "\n".join(lines)


def _subset_lines(subset: Mapping[str, Any]) -> list[str]:
    if not subset:
        return []
    lines = [f"- training pairs: {subset.get('n_chosen')} of {subset.get('n_available')} "
             f"({subset.get('data_pct')}%, subset seed {subset.get('seed')})"]
    if subset.get("ids_sha256"):
        lines.append(f"- SHA-256 of the training ids: `{subset['ids_sha256']}`")
    return lines


def _evaluation_lines(evaluation: tuple[Mapping[str, Any], ...]) -> list[str]:
    if not evaluation:
        return ["No evaluation results were recorded with these weights."]
    lines = ["| task | dataset | method | data % | metric | value (95% CI) |", "|---|---|---|---|---|---|"]
    for result in evaluation:
        fraction = "" if result["data_pct"] is None else f"{result['data_pct']:g}"
        if result["skipped"] or result["value"] is None:
            value = f"not computed: {result['skipped'] or 'undefined'}"
        elif result["low"] is None:
            value = f"{result['value']:.4f}"
        else:
            value = f"{result['value']:.4f} ({result['low']:.4f}-{result['high']:.4f})"
        lines.append(f"| {result['task']} | {result['dataset']} | {result['method']} | {fraction} | "
                     f"{result['metric']} | {value} |")
    return lines
