"""The demo dataset: MIMIC layout and id formats, determinism, planted faults, visible findings, labels matching
reports."""
import csv
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS
from adaptor_vlp.extract.datasets.mimic_cxr import CHEXPERT_COLUMNS, METADATA_COLUMNS, SPLIT_COLUMNS, report_relpath
from adaptor_vlp.extract.datasets.report_sections import Section, parse_sections, report_text
from adaptor_vlp.extract.demo import Fault, write_demo_dataset
from adaptor_vlp.extract.demo.anatomy import sample_anatomy
from adaptor_vlp.extract.demo.findings import (
    AirspaceAppearance,
    AirspaceDisease,
    Certainty,
    Device,
    Edema,
    Effusion,
    Pneumothorax,
    Severity,
    Side,
    StudyFindings,
)
from adaptor_vlp.extract.demo.radiograph import IMAGE_SIDE, draw_frontal

SUBJECT_ID = re.compile(r"^1[0-9]{7}$")
STUDY_ID = re.compile(r"^5[0-9]{7}$")
DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
IMAGE_PATH = re.compile(r"^files/p(1[0-9])/p(1[0-9]{7})/s(5[0-9]{7})/([0-9a-f-]{44})\.jpg$")


def _table(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _header(path: Path) -> list[str]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as stream:
        return next(csv.reader(stream))


def _digests(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "tree"
    summary = write_demo_dataset(root, subjects=15, seed=0)
    return root, summary


def test_tables_have_physionet_names_and_columns(demo):
    root, _ = demo
    assert sorted(path.name for path in root.iterdir()) == [
        "files", "mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-split.csv.gz",
    ]
    assert _header(root / "mimic-cxr-2.0.0-metadata.csv.gz") == list(METADATA_COLUMNS)
    assert _header(root / "mimic-cxr-2.0.0-split.csv.gz") == list(SPLIT_COLUMNS)
    assert _header(root / "mimic-cxr-2.0.0-chexpert.csv.gz") == list(CHEXPERT_COLUMNS)


def test_ids_and_paths_follow_mimic_formats(demo):
    root, summary = demo
    metadata = _table(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert len(metadata) == summary.images_listed
    assert len({row["dicom_id"] for row in metadata}) == len(metadata)
    for row in metadata:
        assert (
            SUBJECT_ID.match(row["subject_id"]) and STUDY_ID.match(row["study_id"]) and DICOM_ID.match(row["dicom_id"])
        )
    images = sorted(path.relative_to(root).as_posix() for path in root.rglob("*.jpg"))
    assert len(images) == summary.images_written
    for image in images:
        folder, subject, study, dicom = IMAGE_PATH.match(image).groups()
        assert subject.startswith(folder)
    reports = sorted(root.rglob("*.txt"))
    assert len(reports) == summary.reports_written
    assert all(re.match(r"^s5[0-9]{7}\.txt$", report.name) for report in reports)


def test_cohort_shape_views_and_subject_level_splits(demo):
    root, summary = demo
    metadata = _table(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    split_of = {row["dicom_id"]: row["split"] for row in _table(root / "mimic-cxr-2.0.0-split.csv.gz")}
    assert set(split_of) == {row["dicom_id"] for row in metadata}
    splits_per_subject: dict[str, set[str]] = {}
    studies_per_subject: dict[str, set[str]] = {}
    for row in metadata:
        splits_per_subject.setdefault(row["subject_id"], set()).add(split_of[row["dicom_id"]])
        studies_per_subject.setdefault(row["subject_id"], set()).add(row["study_id"])
    assert all(len(splits) == 1 for splits in splits_per_subject.values())
    assert {split for splits in splits_per_subject.values() for split in splits} == {"train", "validate", "test"}
    assert all(2 <= len(studies) <= 4 for studies in studies_per_subject.values())
    assert len(studies_per_subject) == summary.subjects == 15
    views = {row["ViewPosition"] for row in metadata}
    assert {"PA", "AP", "LATERAL", ""} <= views
    assert sum(row["ViewPosition"] in ("LATERAL", "LL") for row in metadata) == summary.lateral_images > 0
    assert {row["Rows"] for row in metadata} == {str(IMAGE_SIDE)}


def test_images_are_large_greyscale_jpegs(demo):
    root, summary = demo
    corrupt = {planted.path for planted in summary.faults if planted.fault is Fault.CORRUPT_IMAGE}
    readable = [path for path in sorted(root.rglob("*.jpg")) if path.relative_to(root).as_posix() not in corrupt][:10]
    for path in readable:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (IMAGE_SIDE, IMAGE_SIDE))
            pixels = np.asarray(image)
        assert pixels.min() < 40 and pixels.max() > 180


def test_planted_faults_are_in_the_tree(demo):
    root, summary = demo
    faults = {planted.fault: planted for planted in summary.faults}
    assert set(faults) == set(Fault)
    with pytest.raises(OSError):
        with Image.open(root / faults[Fault.CORRUPT_IMAGE].path) as image:
            image.load()
    metadata = {row["dicom_id"]: row for row in _table(root / "mimic-cxr-2.0.0-metadata.csv.gz")}
    assert faults[Fault.MISSING_IMAGE].dicom_id in metadata
    assert not (root / faults[Fault.MISSING_IMAGE].path).exists()
    assert metadata[faults[Fault.BLANK_VIEW].dicom_id]["ViewPosition"] == ""
    assert (root / faults[Fault.BLANK_VIEW].path).is_file()
    assert (root / faults[Fault.EMPTY_REPORT].path).read_bytes() == b""
    assert not (root / faults[Fault.MISSING_REPORT].path).exists()
    impression_only = parse_sections((root / faults[Fault.IMPRESSION_ONLY].path).read_text())
    assert [section.covers for section in impression_only] == [(Section.IMPRESSION,)]
    studies = {planted.study_id for planted in summary.faults}
    assert len(studies) == len(Fault)
    text = "\n".join(summary.lines())
    assert all(fault.value in text and faults[fault].path in text for fault in Fault)


KEYWORDS = {
    "Atelectasis": r"atelecta",
    "Cardiomegaly": r"cardiomegaly|heart|cardiac silhouette|cardiomediastinal",
    "Consolidation": r"consolidation",
    "Edema": r"edema",
    "Enlarged Cardiomediastinum": r"mediastin",
    "Fracture": r"fracture",
    "Lung Lesion": r"nodule|mass|lesion",
    "Lung Opacity": r"opacit",
    "Pleural Effusion": r"effusion",
    "Pleural Other": r"thickening|plaque",
    "Pneumonia": r"pneumonia",
    "Pneumothorax": r"pneumothorax",
    "Support Devices": r"\btubes?\b|catheter|pacemaker|\bdevices?\b",
}
HEDGED = re.compile(r"\b(possible|possibly|may|likely|cannot be excluded)\b", re.IGNORECASE)
NEGATED = re.compile(r"\b(no|normal)\b", re.IGNORECASE)


def _sentence_polarity(sentence: str) -> float:
    if HEDGED.search(sentence):
        return -1.0
    return 0.0 if NEGATED.search(sentence) else 1.0


def test_chexpert_labels_match_what_the_reports_say(demo):
    """Read each report's IMPRESSION + FINDINGS like a keyword labeller and compare with the CheXpert table."""
    root, _ = demo
    seen_values = set()
    labelled = _table(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    for row in labelled:
        text = report_text((root / report_relpath(row["subject_id"], row["study_id"])).read_text()).text
        sentences = re.split(r"(?<=\.)\s+", text)
        for name, pattern in KEYWORDS.items():
            stated = {_sentence_polarity(s) for s in sentences if re.search(pattern, s, re.IGNORECASE)}
            expected = set() if row[name] == "" else {float(row[name])}
            assert stated == expected, (
                f"study {row['study_id']} {name}: table {row[name]!r}, report says {stated}: {text}"
            )
            seen_values |= expected
        pathology = [row[name] for name in CHEXPERT_LABELS if name not in ("No Finding", "Support Devices")]
        assert (row["No Finding"] == "1.0") == all(value in ("", "0.0") for value in pathology)
        assert row["No Finding"] in ("1.0", "")
    assert seen_values == {1.0, 0.0, -1.0}
    reports = {path.stem[1:] for path in root.rglob("*.txt") if path.stat().st_size > 0}
    assert {row["study_id"] for row in labelled} == reports


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = write_demo_dataset(tmp_path / "a", subjects=3, seed=7)
    write_demo_dataset(tmp_path / "b", subjects=3, seed=7)
    write_demo_dataset(tmp_path / "c", subjects=3, seed=8)
    digests = _digests(tmp_path / "a")
    assert len(digests) == first.images_written + first.reports_written + 3
    assert digests == _digests(tmp_path / "b")
    other = _digests(tmp_path / "c")
    assert other.keys() != digests.keys()
    assert other["mimic-cxr-2.0.0-metadata.csv.gz"] != digests["mimic-cxr-2.0.0-metadata.csv.gz"]


def test_refuses_too_few_subjects_and_a_non_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="at least 3 subjects"):
        write_demo_dataset(tmp_path / "few", subjects=2)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_dataset(tmp_path / "used", subjects=3)


ANATOMY = sample_anatomy(np.random.default_rng(0))


def _draw(findings: StudyFindings, anatomy=ANATOMY, seed: int = 0) -> np.ndarray:
    return draw_frontal(findings, anatomy, np.random.default_rng(seed), portable=False).astype(np.float32)


def _zone(pixels: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    side = pixels.shape[0]
    return pixels[int(y0 * side):int(y1 * side), int(x0 * side):int(x1 * side)]


def _right_lung_x(anatomy=ANATOMY) -> tuple[float, float]:
    """The image-left lung's horizontal extent (the patient's right lung)."""
    centre = anatomy.midline - anatomy.mediastinum_half_width - anatomy.lung_half_width
    return centre - 0.7 * anatomy.lung_half_width, centre + 0.7 * anatomy.lung_half_width


def test_effusion_whitens_the_lung_base_on_its_side():
    normal = _draw(StudyFindings())
    effusion = _draw(StudyFindings(effusion=Effusion(Side.RIGHT, Severity.MODERATE, Certainty.DEFINITE)))
    x0, x1 = _right_lung_x()
    base = (ANATOMY.diaphragm - 0.1, ANATOMY.diaphragm)
    assert _zone(effusion, x0, x1, *base).mean() - _zone(normal, x0, x1, *base).mean() > 50
    left_base = (1 - x1, 1 - x0, *base)
    assert abs(_zone(effusion, *left_base).mean() - _zone(normal, *left_base).mean()) < 5


def test_cardiomegaly_widens_the_heart_shadow():
    normal = _draw(StudyFindings())
    enlarged = _draw(StudyFindings(cardiomegaly=True))
    beside_heart = (ANATOMY.midline + 0.16, ANATOMY.midline + 0.2, ANATOMY.diaphragm - 0.08, ANATOMY.diaphragm - 0.04)
    assert _zone(enlarged, *beside_heart).mean() - _zone(normal, *beside_heart).mean() > 50


def test_pneumothorax_leaves_a_dark_apex_without_lung_markings():
    normal = _draw(StudyFindings())
    collapsed = _draw(StudyFindings(pneumothorax=Pneumothorax(Side.RIGHT, Severity.LARGE)))
    x0, _ = _right_lung_x()
    apex = (x0, x0 + 0.05, ANATOMY.apex + 0.1, ANATOMY.apex + 0.2)
    assert _zone(collapsed, *apex).mean() < _zone(normal, *apex).mean() - 10


def test_edema_and_airspace_disease_brighten_the_lungs():
    normal = _draw(StudyFindings())
    x0, x1 = _right_lung_x()
    middle = (x0, x1, (ANATOMY.apex + ANATOMY.diaphragm) / 2 - 0.05, (ANATOMY.apex + ANATOMY.diaphragm) / 2 + 0.1)
    edema = _draw(StudyFindings(edema=Edema(Certainty.DEFINITE)))
    assert _zone(edema, *middle).mean() - _zone(normal, *middle).mean() > 15
    airspace = _draw(StudyFindings(airspace=AirspaceDisease(Side.RIGHT, AirspaceAppearance.CONSOLIDATION, None)))
    lower = (x0, x1, ANATOMY.diaphragm - 0.2, ANATOMY.diaphragm - 0.05)
    assert _zone(airspace, *lower).mean() - _zone(normal, *lower).mean() > 25


def test_devices_add_near_white_lines():
    normal = _draw(StudyFindings())
    with_devices = _draw(StudyFindings(devices=tuple(Device)))
    assert (with_devices > 235).sum() > (normal > 235).sum() + 2000


def test_findings_separate_at_a_coarse_scale_across_patients():
    """Downsampled to 16x16, effusion images lie apart from normals along the class-mean direction."""
    def thumbnail(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(
            Image.fromarray(pixels.astype(np.uint8)).resize((16, 16), Image.Resampling.BOX), np.float32
        ).ravel()

    anatomies = [sample_anatomy(np.random.default_rng(seed)) for seed in range(1, 7)]
    effusion = StudyFindings(effusion=Effusion(Side.BOTH, Severity.MODERATE, Certainty.DEFINITE))
    normals = np.stack([thumbnail(_draw(StudyFindings(), anatomy, seed)) for seed, anatomy in enumerate(anatomies)])
    effusions = np.stack([thumbnail(_draw(effusion, anatomy, seed)) for seed, anatomy in enumerate(anatomies)])
    direction = effusions.mean(0) - normals.mean(0)
    assert (effusions @ direction).min() > (normals @ direction).max()
