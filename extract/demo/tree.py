"""Write a demo dataset in exactly the MIMIC-CXR-JPG 2.0.0 layout, reports unzipped into the same root.

`root/mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz`, images at
`root/files/pNN/pSUBJECT/sSTUDY/DICOM.jpg` and reports at `root/files/pNN/pSUBJECT/sSTUDY.txt`.
"""
from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, Split, format_label
from adaptor_vlp.extract.datasets.mimic_cxr import (
    CHEXPERT_COLUMNS,
    CHEXPERT_TABLE,
    METADATA_COLUMNS,
    METADATA_TABLE,
    SPLIT_COLUMNS,
    SPLIT_TABLE,
    report_relpath,
    study_folder,
)
from adaptor_vlp.extract.demo.anatomy import position
from adaptor_vlp.extract.demo.cohort import (
    Cohort,
    ImageFile,
    PlantedFault,
    Procedure,
    Projection,
    StudyPlan,
    SubjectPlan,
    plan_cohort,
)
from adaptor_vlp.extract.demo.preflight import check_empty_folder
from adaptor_vlp.extract.demo.radiograph import IMAGE_SIDE, draw_frontal, draw_lateral, encode_jpeg
from adaptor_vlp.extract.demo.reports import DemoReport, ReportForm, StudyContext, write_report

_VIEW_CODE_MEANING = {
    "PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral", "": "",
}
_TECHNIQUE = {
    Procedure.PA_AND_LATERAL: "Chest PA and lateral",
    Procedure.PORTABLE_AP: "Single frontal view of the chest",
}
_TRUNCATED_FRACTION = 8
"""A corrupt image keeps only the first 1/8 of its JPEG bytes, as an interrupted download would."""


@dataclass(frozen=True)
class DemoSummary:
    """What `write_demo_dataset` wrote and which faults it planted."""

    root: Path
    subjects: int
    studies: int
    images_listed: int
    images_written: int
    lateral_images: int
    reports_written: int
    subjects_per_split: Mapping[str, int]
    faults: tuple[PlantedFault, ...]

    def lines(self) -> list[str]:
        """A human-readable account, one line per fact."""
        splits = ", ".join(f"{split} {count}" for split, count in self.subjects_per_split.items())
        return [
            f"demo MIMIC-CXR-JPG tree at {self.root}",
            f"{self.subjects} subjects ({splits}), {self.studies} studies, {self.reports_written} report files",
            f"{self.images_listed} images listed, {self.images_written} JPEG files written "
            f"({self.lateral_images} lateral)",
            "planted faults:",
            *(f"  {planted.fault.value}: {planted.path}" for planted in self.faults),
        ]


def write_demo_dataset(out: Path, subjects: int = 60, seed: int = 0) -> DemoSummary:
    """Write a deterministic demo dataset (same seed, same bytes) into `out`, which must be empty or absent."""
    check_empty_folder(out)
    cohort = plan_cohort(subjects, seed)
    out.mkdir(parents=True, exist_ok=True)
    reports = {}
    for subject in cohort.subjects:
        for study in subject.studies:
            reports[study.study_id] = _write_study(out, subject, study)
    _write_gzip_csv(out / f"{METADATA_TABLE}.csv.gz", METADATA_COLUMNS, _metadata_rows(cohort))
    _write_gzip_csv(out / f"{SPLIT_TABLE}.csv.gz", SPLIT_COLUMNS, _split_rows(cohort))
    _write_gzip_csv(out / f"{CHEXPERT_TABLE}.csv.gz", CHEXPERT_COLUMNS, _label_rows(cohort, reports))
    return _summarise(out, cohort)


def _write_study(out: Path, subject: SubjectPlan, study: StudyPlan) -> DemoReport:
    """Write a study's images and report file; return the report (its labels go into the CheXpert table)."""
    _write_images(out / study_folder(subject.subject_id, study.study_id), subject, study)
    context = StudyContext(
        examination=study.procedure.value,
        technique=_TECHNIQUE[study.procedure],
        has_prior=study.study_id != subject.studies[0].study_id,
    )
    report = write_report(study.findings, context, study.report_form, np.random.default_rng(study.report_seed))
    if study.report_form is not ReportForm.MISSING:
        (out / report_relpath(subject.subject_id, study.study_id)).write_text(report.text, encoding="utf-8")
    return report


def _write_images(study_dir: Path, subject: SubjectPlan, study: StudyPlan) -> None:
    study_dir.mkdir(parents=True, exist_ok=True)
    for image in study.images:
        if image.file is ImageFile.MISSING:
            continue
        rng = np.random.default_rng(image.seed)
        anatomy = position(subject.anatomy, rng, portable=study.procedure is Procedure.PORTABLE_AP)
        if image.projection is Projection.LATERAL:
            pixels = draw_lateral(study.findings, anatomy, rng)
        else:
            pixels = draw_frontal(study.findings, anatomy, rng, portable=image.projection is Projection.AP)
        data = encode_jpeg(pixels)
        if image.file is ImageFile.CORRUPT:
            data = data[: len(data) // _TRUNCATED_FRACTION]
        (study_dir / f"{image.dicom_id}.jpg").write_bytes(data)


def _metadata_rows(cohort: Cohort) -> Iterable[Sequence[str]]:
    for subject in cohort.subjects:
        for study in subject.studies:
            for image in study.images:
                orientation = "" if not image.view else ("Recumbent" if image.projection is Projection.AP else "Erect")
                yield (
                    image.dicom_id, subject.subject_id, study.study_id, study.procedure.value, image.view,
                    str(IMAGE_SIDE), str(IMAGE_SIDE), study.date, study.time, study.procedure.value,
                    _VIEW_CODE_MEANING[image.view], orientation,
                )


def _split_rows(cohort: Cohort) -> Iterable[Sequence[str]]:
    for subject in cohort.subjects:
        for study in subject.studies:
            for image in study.images:
                yield image.dicom_id, study.study_id, subject.subject_id, subject.split.value


def _label_rows(cohort: Cohort, reports: Mapping[str, DemoReport]) -> Iterable[Sequence[str]]:
    """One row per study with a report to label (studies whose report is empty or missing have none)."""
    for subject in cohort.subjects:
        for study in subject.studies:
            if study.report_form in (ReportForm.EMPTY, ReportForm.MISSING):
                continue
            labels = reports[study.study_id].labels
            yield (subject.subject_id, study.study_id, *(format_label(labels[name]) for name in CHEXPERT_LABELS))


def _write_gzip_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A gzip'd CSV as PhysioNet ships them, with a fixed gzip timestamp so the bytes are reproducible."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
        compressed.write(text.getvalue().encode("utf-8"))


def _summarise(out: Path, cohort: Cohort) -> DemoSummary:
    studies = [study for subject in cohort.subjects for study in subject.studies]
    images = [image for study in studies for image in study.images]
    split_counts = Counter(subject.split for subject in cohort.subjects)
    return DemoSummary(
        root=out,
        subjects=len(cohort.subjects),
        studies=len(studies),
        images_listed=len(images),
        images_written=sum(image.file is not ImageFile.MISSING for image in images),
        lateral_images=sum(image.projection is Projection.LATERAL for image in images),
        reports_written=sum(study.report_form is not ReportForm.MISSING for study in studies),
        subjects_per_split={split.value: split_counts.get(split, 0) for split in Split},
        faults=cohort.faults,
    )
