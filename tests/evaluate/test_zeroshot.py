"""Prompt files are checked, become a manifest the extract stage can embed, and score images above chance."""
from dataclasses import replace

import pytest

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, read_manifest, write_manifest
from adaptor_vlp.evaluate.classify import ClassificationError
from adaptor_vlp.evaluate.features import open_adaptor_run
from adaptor_vlp.evaluate.zeroshot import (
    DEFAULT_PROMPTS,
    PromptError,
    PromptScoring,
    ZeroShotSettings,
    read_prompt_manifest,
    read_prompts,
    run_zeroshot,
    write_prompt_manifest,
)
from tests.evaluate.conftest import DATASET, PROMPTS, build_prompt_store

ZERO_SHOT_MARGIN = 0.1
"""Zero-shot macro AUROC on the toy test split must exceed chance (0.5) by this much."""


def test_the_bundled_prompts_cover_the_14_chexpert_labels_in_pairs():
    prompts = read_prompts(DEFAULT_PROMPTS)
    assert prompts.class_names == CHEXPERT_LABELS
    assert prompts.scoring is PromptScoring.PAIRS


def test_a_prompt_manifest_has_one_row_per_prompt_and_reads_back(tmp_path):
    csv_path = write_prompt_manifest(tmp_path / "cache", "chexpert", DEFAULT_PROMPTS)
    manifest = read_manifest(csv_path.parent)
    expected = read_prompts(DEFAULT_PROMPTS)

    assert manifest.dataset == "prompts-chexpert"
    assert [(row.dicom_id, row.report_text) for row in manifest.rows] == expected.prompts()
    assert all(row.study_id == row.dicom_id and row.report_usable for row in manifest.rows)
    assert read_prompt_manifest(tmp_path / "cache", "chexpert") == expected


def test_classes_without_negatives_are_one_multiclass_choice(tmp_path):
    path = tmp_path / "covidx.toml"
    path.write_text('[classes.normal]\npositive = "normal lungs"\n[classes."COVID-19"]\npositive = "covid"\n')
    prompts = read_prompts(path)
    assert prompts.scoring is PromptScoring.CLASSES
    assert [text for _, text in prompts.prompts()] == ["normal lungs", "covid"]


@pytest.mark.parametrize("text, message", [
    ('[classes.a]\npositive = "x"\nnegative = "y"\n[classes.b]\npositive = "z"\n', "no negative prompt"),
    ('[classes.a]\npositive = "x"\nhint = "y"\n', "unknown keys"),
    ('[classes.a]\nnegative = "y"\n', "no positive prompt"),
    ('[classes."a|b"]\npositive = "x"\nnegative = "y"\n', "without '|'"),
    ('title = "no classes"\n', "no \\[classes"),
    ("[classes\n", "not a valid TOML"),
])
def test_malformed_prompt_files_are_refused_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "prompts.toml"
    path.write_text(text)
    with pytest.raises(PromptError, match=message):
        read_prompts(path)


def test_zero_shot_scores_beat_chance_through_the_adaptor(toy, toy_run):
    result = run_zeroshot(toy.cache_dir, DATASET, PROMPTS, open_adaptor_run(toy_run), ZeroShotSettings(n_resamples=50))
    record = result.record
    assert record.metrics["macro_auroc"].point >= 0.5 + ZERO_SHOT_MARGIN
    scores = result.arrays["test_scores"]
    assert scores.shape == (record.details["n_test"], 2)
    assert ((scores > 0) & (scores < 1)).all()
    assert set(record.context.provenance) == {"image", "text"}
    assert record.context.provenance["text"]["dataset"] == "prompts-toy"


def test_prompts_not_yet_embedded_are_a_clear_error_with_the_command_to_run(toy, toy_run):
    write_prompt_manifest(toy.cache_dir, "unembedded", DEFAULT_PROMPTS)
    with pytest.raises(PromptError, match="adaptor extract texts .* --dataset prompts-unembedded --backbone toy-bert"):
        run_zeroshot(toy.cache_dir, DATASET, "unembedded", open_adaptor_run(toy_run), ZeroShotSettings(n_resamples=5))


def test_prompts_for_labels_the_dataset_lacks_are_refused(toy, toy_run):
    build_prompt_store(toy, "chexpert-on-toy", DEFAULT_PROMPTS)
    with pytest.raises(ClassificationError, match="unknown label.*Atelectasis"):
        run_zeroshot(toy.cache_dir, DATASET, "chexpert-on-toy", open_adaptor_run(toy_run),
                     ZeroShotSettings(n_resamples=5))


def test_a_manifest_that_is_not_a_prompt_set_is_refused(toy):
    (toy.cache_dir / "prompts-images").mkdir()
    write_manifest(replace(toy.manifest, dataset="prompts-images"), toy.cache_dir / "prompts-images")
    with pytest.raises(PromptError, match="not a prompt manifest"):
        read_prompt_manifest(toy.cache_dir, "images")
