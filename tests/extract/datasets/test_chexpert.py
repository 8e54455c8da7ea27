"""CheXpert reader on trees built from the real train.csv's rows: paths, frontal filter, label policies, splits."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, Split, read_manifest, write_manifest
from adaptor_vlp.extract.datasets import BlankPolicy, ChexpertUncertainPolicy, DownstreamLayoutError, read_chexpert
from adaptor_vlp.extract.datasets.chexpert import COMPETITION_TASKS, LATERAL_IMAGE
from tests.extract.datasets.conftest import assert_reads_the_same_once_resaved, write_csv

TRAIN_ROWS = 40
MISSING = "train/patient00003/study1/view1_frontal.jpg"
VALID_PATHS = [f"CheXpert-v1.0-small/valid/patient6454{index}/study1/view1_frontal.jpg" for index in range(1, 4)]


@pytest.fixture(scope="module")
def tree(chexpert_rows, tmp_path_factory) -> Path:
    """CheXpert-v1.0-small with the real table's first 40 rows for train, three valid rows, one image missing."""
    root = tmp_path_factory.mktemp("chexpert") / "CheXpert-v1.0-small"
    header, train = chexpert_rows[0], chexpert_rows[1 : TRAIN_ROWS + 1]
    valid = [[path, "Female", "50", "Frontal", "PA"] + ["1.0" if (index + label) % 4 == 0 else "0.0"
                                                     for label in range(14)] for index, path in enumerate(VALID_PATHS)]
    write_csv(root / "train.csv", [header] + train)
    write_csv(root / "valid.csv", [header] + valid)
    for row in train + valid:
        relative = row[0].split("/", 1)[1]
        if relative != MISSING:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / relative)
    return root


def _by_id(manifest):
    return {row.dicom_id: row for row in manifest.rows}


def test_rows_follow_the_real_layout(tree, chexpert_rows):
    manifest = read_chexpert(tree)
    frontal = [row for row in chexpert_rows[1 : TRAIN_ROWS + 1] if row[3] == "Frontal"]
    assert len(manifest.rows) == len(frontal) - 1 + len(VALID_PATHS)
    assert manifest.exclusions == {LATERAL_IMAGE: TRAIN_ROWS - len(frontal), "image file missing": 1}
    first = manifest.rows[0]
    assert (first.dicom_id, first.study_id, first.subject_id) == ("patient00001/study1/view1_frontal",
                                                                  "patient00001/study1", "patient00001")
    assert first.image_path == "train/patient00001/study1/view1_frontal.jpg"
    assert (manifest.image_root / first.image_path).is_file()
    assert first.view == "AP" and first.report_text == "" and not first.report_usable
    assert manifest.label_names == CHEXPERT_LABELS and not manifest.has_masks


def test_valid_csv_is_the_test_split_and_train_patients_never_straddle(tree):
    manifest = read_chexpert(tree, val_fraction=0.3, seed=1)
    assert [row.split for row in manifest.rows[-3:]] == [Split.TEST] * 3
    assert {row.split for row in manifest.rows[:-3]} == {Split.TRAIN, Split.VALIDATE}
    patients_per_split = {}
    for row in manifest.rows:
        patients_per_split.setdefault(row.subject_id, set()).add(row.split)
    assert all(len(splits) == 1 for splits in patients_per_split.values())
    assert read_chexpert(tree, val_fraction=0.3, seed=1) == manifest
    other_seeds = [read_chexpert(tree, val_fraction=0.3, seed=seed) for seed in (2, 3)]
    assert any([row.split for row in other.rows] != [row.split for row in manifest.rows] for other in other_seeds)


def test_uncertain_and_blank_policies(tree):
    # Real rows: patient00002/study2 has Cardiomegaly, Edema, Consolidation, Atelectasis and Pleural Effusion
    # uncertain, Lung Opacity and Fracture positive, Pneumonia blank; patient00011/study1 has Pneumothorax uncertain.
    image, other = "patient00002/study2/view1_frontal", "patient00011/study1/view1_frontal"
    competition = _by_id(read_chexpert(tree))
    assert {name: competition[image].labels[name] for name in COMPETITION_TASKS} == {
        "Atelectasis": 1.0, "Cardiomegaly": 0.0, "Consolidation": 0.0, "Edema": 1.0, "Pleural Effusion": 1.0}
    assert competition[image].labels["Pneumonia"] == 0.0 and competition[image].labels["Fracture"] == 1.0
    assert competition[other].labels["Pneumothorax"] is None  # uncertain outside the competition tasks
    ones = _by_id(read_chexpert(tree, uncertain=ChexpertUncertainPolicy.ONES))
    zeros = _by_id(read_chexpert(tree, uncertain=ChexpertUncertainPolicy.ZEROS))
    ignore = _by_id(read_chexpert(tree, uncertain=ChexpertUncertainPolicy.IGNORE, blank=BlankPolicy.IGNORE))
    assert ones[image].labels["Cardiomegaly"] == 1.0 and ones[other].labels["Pneumothorax"] == 1.0
    assert zeros[image].labels["Edema"] == 0.0 and zeros[other].labels["Pneumothorax"] == 0.0
    assert ignore[image].labels["Cardiomegaly"] is None and ignore[image].labels["Pneumonia"] is None
    assert ignore[image].labels["Lung Opacity"] == 1.0


def test_options_are_recorded_and_survive_the_manifest_files(tree, tmp_path):
    manifest = read_chexpert(tree, uncertain=ChexpertUncertainPolicy.ZEROS, seed=4)
    write_manifest(manifest, tmp_path)
    restored = read_manifest(tmp_path)
    assert restored == manifest
    assert restored.options["uncertain"] == "zeros" and restored.options["seed"] == 4


@pytest.mark.slow
def test_the_whole_real_train_csv_parses(chexpert_rows, tmp_path):
    """Every real row's Path and labels are understood; with no images on disk, the error counts them."""
    write_csv(tmp_path / "train.csv", chexpert_rows)
    write_csv(tmp_path / "valid.csv", chexpert_rows[:1])
    lateral = sum(row[3] == "Lateral" for row in chexpert_rows[1:])
    frontal = len(chexpert_rows) - 1 - lateral
    with pytest.raises(DownstreamLayoutError, match=rf"{frontal} image file missing, {lateral} lateral image"):
        read_chexpert(tmp_path)


def test_layout_errors_name_the_file_line_or_column(tree, tmp_path, chexpert_rows):
    with pytest.raises(DownstreamLayoutError, match=r"train\.csv not found: point --root at the CheXpert"):
        read_chexpert(tmp_path)
    header = chexpert_rows[0]
    write_csv(tmp_path / "train.csv", [[name for name in header if name != "Edema"]])
    write_csv(tmp_path / "valid.csv", [header])
    with pytest.raises(DownstreamLayoutError, match=r"lacks column\(s\) Edema"):
        read_chexpert(tmp_path)
    write_csv(tmp_path / "train.csv", [header, ["train/patient1/view1.jpg"] + chexpert_rows[1][1:]])
    with pytest.raises(DownstreamLayoutError, match=r"train\.csv line 2: Path 'train/patient1/view1\.jpg'"):
        read_chexpert(tmp_path)
    write_csv(tmp_path / "train.csv", [header, chexpert_rows[1][:5] + ["2.0"] + chexpert_rows[1][6:]])
    with pytest.raises(DownstreamLayoutError, match=r"line 2 column 'No Finding': label value '2\.0'"):
        read_chexpert(tmp_path)
    with pytest.raises(ValueError, match="validation and test fractions"):
        read_chexpert(tree, val_fraction=1.0)


def test_tables_saved_by_a_spreadsheet_read_the_same(tree, tmp_path):
    """A UTF-8 byte-order mark, CRLF line endings and trailing blank lines (and empty rows) change nothing."""
    assert_reads_the_same_once_resaved(
        read_chexpert, tree, tmp_path / "CheXpert-v1.0-small", ("train.csv", "valid.csv")
    )
