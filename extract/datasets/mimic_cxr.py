"""Read a MIMIC-CXR-JPG 2.0.0 tree (plus the MIMIC-CXR reports) into a `Manifest`.

The layout is PhysioNet's: `mimic-cxr-2.0.0-{metadata,split,chexpert}.csv[.gz]` at the root,
images at `files/p10/p10000032/s50414267/<dicom_id>.jpg` and reports at
`files/p10/p10000032/s50414267.txt`, either unzipped into the same root or under a separate
reports root. One manifest row per selected image; the report text is shared by a study's images.

The tables are streamed with the csv module, so the 377k-row metadata reads in seconds. Each
selected image costs one `stat` (missing files are excluded and listed) and each study one
report read; neither decodes an image (corrupt images are found and recorded at extraction).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, Sequence

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, Exclusion, Manifest, ManifestRow, Split, parse_label
from adaptor_vlp.extract.datasets.csv_tables import read_csv_records
from adaptor_vlp.extract.datasets.mit_lcp_sections import published_report_text
from adaptor_vlp.extract.datasets.report_sections import (
    DEFAULT_MIN_WORDS,
    DEFAULT_SECTIONS,
    ReportText,
    Section,
    parse_section_names,
)
from adaptor_vlp.extract.datasets.report_sections import report_text as select_report_text

DATASET = "mimic-cxr"

METADATA_TABLE = "mimic-cxr-2.0.0-metadata"
SPLIT_TABLE = "mimic-cxr-2.0.0-split"
CHEXPERT_TABLE = "mimic-cxr-2.0.0-chexpert"

METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
CHEXPERT_COLUMNS: tuple[str, ...] = ("subject_id", "study_id") + CHEXPERT_LABELS

DEFAULT_VIEWS: tuple[str, ...] = ("PA", "AP")
"""Frontal views, as the paper uses."""

MISSING_REPORT = "missing report file"
UNREADABLE_REPORT = "report file unreadable"
IMAGE_MISSING = "image file missing"
NOT_IN_SPLIT = "not in the official split"
NO_VIEW_POSITION = "no view position"


_NO_LABELS: dict[str, float | None] = {name: None for name in CHEXPERT_LABELS}
"""The labels of a study absent from the CheXpert table: none mentioned."""


class SectionParser(str, Enum):
    """Which parser finds a report's sections."""

    ADAPTOR = "adaptor"
    """`extract.datasets.report_sections`: known headers only, in any case, wanted sections in the order asked."""
    MIT_LCP = "mit-lcp"
    """`extract.datasets.mit_lcp_sections`: MIT-LCP's parser as the paper's code used it
    (IMPRESSION + FINDINGS only).
    """


class MimicLayoutError(ValueError):
    """A MIMIC-CXR-JPG table is missing, lacks a column, or holds a value that cannot be read."""


def study_folder(subject_id: str, study_id: str) -> str:
    """`files/pNN/pSUBJECT/sSTUDY`, relative to the image root (pNN: the subject id's first two digits)."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}"


def image_relpath(subject_id: str, study_id: str, dicom_id: str) -> str:
    """An image's POSIX path relative to the image root."""
    return f"{study_folder(subject_id, study_id)}/{dicom_id}.jpg"


def report_relpath(subject_id: str, study_id: str) -> str:
    """A study's report path relative to the reports root."""
    return f"{study_folder(subject_id, study_id)}.txt"


def read_mimic_cxr(
    root: Path,
    reports_root: Path | None = None,
    views: Sequence[str] = DEFAULT_VIEWS,
    merge_validate_test: bool = False,
    sections: Sequence[Section | str] = DEFAULT_SECTIONS,
    min_words: int = DEFAULT_MIN_WORDS,
    section_parser: SectionParser = SectionParser.ADAPTOR,
) -> Manifest:
    """One manifest row per image of the selected views that exists on disk, in metadata order.

    Images of other views, images not in the split table and missing image files are left out,
    each recorded in `excluded` (ids, path, reason) and counted by reason in `exclusions`. A
    missing, empty, unreadable or section-less report keeps its rows with `report_issue` set.
    With `merge_validate_test`, test rows join the validate split. With the MIT-LCP section
    parser the text is IMPRESSION + " " + FINDINGS as the paper's code built it (`sections` and
    `min_words` do not apply: MGCA's cleaning, a text backbone's `text_cleaning`, decides what is
    too short).
    """
    reports_root = root if reports_root is None else reports_root
    wanted_views = _parse_views(views)
    reports = _StudyReports(reports_root, parse_section_names(sections), min_words, section_parser)
    splits = _read_splits(_find_table(root, SPLIT_TABLE))
    labels = _read_labels(_find_table(root, CHEXPERT_TABLE))
    excluded: list[Exclusion] = []
    rows: list[ManifestRow] = []
    for image in _read_images(_find_table(root, METADATA_TABLE)):
        split = splits.get(image.dicom_id)
        reason = _exclusion_reason(image, wanted_views, split, root)
        if reason:
            excluded.append(Exclusion(image.dicom_id, image.study_id, image.subject_id, image.path, reason))
            continue
        report = reports.text_of(image.subject_id, image.study_id)
        rows.append(
            ManifestRow(
                dicom_id=image.dicom_id,
                study_id=image.study_id,
                subject_id=image.subject_id,
                split=Split.VALIDATE if merge_validate_test and split is Split.TEST else split,
                view=image.view,
                image_path=image.path,
                report_text=report.text,
                report_issue=report.issue,
                labels=labels.get(image.study_id, _NO_LABELS),
            )
        )
    options = {
        "views": list(wanted_views),
        "merge_validate_test": merge_validate_test,
        "sections": [section.value for section in reports.sections],
        "min_words": min_words,
    }
    if section_parser is SectionParser.MIT_LCP:
        options.update(section_parser=section_parser.value, sections=["impression", "findings"], min_words=None)
    return Manifest(DATASET, root, reports_root, tuple(rows), options, excluded=tuple(excluded))


@dataclass(frozen=True)
class _ImageRecord:
    """One metadata row: an image's ids, ViewPosition and path relative to the image root."""

    dicom_id: str
    subject_id: str
    study_id: str
    view: str

    @property
    def path(self) -> str:
        return image_relpath(self.subject_id, self.study_id, self.dicom_id)


class _StudyReports:
    """Each study's report text, read once however many images the study has."""

    def __init__(self, reports_root: Path, sections: tuple[Section, ...], min_words: int,
                 parser: SectionParser) -> None:
        self.reports_root = reports_root
        self.sections = sections
        self.min_words = min_words
        self.parser = parser
        self._texts: dict[str, ReportText] = {}

    def text_of(self, subject_id: str, study_id: str) -> ReportText:
        if study_id not in self._texts:
            path = self.reports_root / report_relpath(subject_id, study_id)
            try:
                raw = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                self._texts[study_id] = ReportText("", MISSING_REPORT)
            except OSError as error:  # a folder, no permission, an I/O error: the study keeps its images
                self._texts[study_id] = ReportText("", f"{UNREADABLE_REPORT} ({type(error).__name__})")
            else:
                self._texts[study_id] = (published_report_text(raw, study_id) if self.parser is SectionParser.MIT_LCP
                                         else select_report_text(raw, self.sections, self.min_words))
        return self._texts[study_id]


def _exclusion_reason(image: _ImageRecord, views: tuple[str, ...], split: Split | None, root: Path) -> str:
    """Why an image is left out of the manifest, or "" when it is kept (one stat for kept views)."""
    if image.view not in views:
        return f"view {image.view} not selected" if image.view else NO_VIEW_POSITION
    if split is None:
        return NOT_IN_SPLIT
    if not os.path.isfile(os.path.join(root, image.path)):
        return IMAGE_MISSING
    return ""


def _find_table(root: Path, stem: str) -> Path:
    """The table `<stem>.csv` or, as PhysioNet ships it, `<stem>.csv.gz` under `root`."""
    for candidate in (root / f"{stem}.csv", root / f"{stem}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise MimicLayoutError(
        f"neither {root / (stem + '.csv.gz')} nor {root / (stem + '.csv')} exists: point --root at the "
        "MIMIC-CXR-JPG 2.0.0 folder that holds files/ and the mimic-cxr-2.0.0-*.csv.gz tables"
    )


def _parse_views(views: Sequence[str]) -> tuple[str, ...]:
    parsed = tuple(view.strip().upper() for view in views if view.strip())
    if not parsed:
        raise ValueError("no views asked for: name at least one ViewPosition, e.g. PA,AP")
    return parsed


def _read_images(path: Path) -> Iterator[_ImageRecord]:
    columns = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    for line_number, record in read_csv_records(path, columns, MimicLayoutError):
        image = _ImageRecord(record["dicom_id"], record["subject_id"], record["study_id"], record["ViewPosition"])
        if not (image.subject_id.isdigit() and image.study_id.isdigit() and image.dicom_id):
            raise MimicLayoutError(
                f"{path} line {line_number}: ids dicom_id={image.dicom_id!r} subject_id={image.subject_id!r} "
                f"study_id={image.study_id!r} are not MIMIC ids (numeric subject and study ids, a dicom id)"
            )
        yield image


def _read_splits(path: Path) -> dict[str, Split]:
    splits = {}
    for line_number, record in read_csv_records(path, SPLIT_COLUMNS, MimicLayoutError):
        try:
            splits[record["dicom_id"]] = Split(record["split"])
        except ValueError as error:
            raise MimicLayoutError(
                f"{path} line {line_number}: split {record['split']!r} is not one of train, validate, test"
            ) from error
    return splits


def _read_labels(path: Path) -> dict[str, dict[str, float | None]]:
    labels = {}
    for line_number, record in read_csv_records(path, CHEXPERT_COLUMNS, MimicLayoutError):
        try:
            labels[record["study_id"]] = {name: parse_label(record[name]) for name in CHEXPERT_LABELS}
        except ValueError as error:
            raise MimicLayoutError(f"{path} line {line_number}: {error}") from error
    return labels
