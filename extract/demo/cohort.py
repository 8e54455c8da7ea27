"""Plan a demo cohort: patients, their studies and images, MIMIC-format ids, splits, and planted faults.

The plan is drawn from one seeded generator in a fixed order and fixes everything the tree writer
needs (including a seed per image and per report), so the same seed always yields the same bytes.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from adaptor_vlp.cache_schema.manifest import Split
from adaptor_vlp.extract.datasets.mimic_cxr import image_relpath, report_relpath
from adaptor_vlp.extract.demo.anatomy import Anatomy, sample_anatomy
from adaptor_vlp.extract.demo.findings import StudyFindings, sample_findings, sample_traits
from adaptor_vlp.extract.demo.reports import ReportForm

MIN_SUBJECTS = 3
"""One patient per split at least; with two or more studies each that also leaves a study per fault."""


class Procedure(str, Enum):
    """The examination, as MIMIC's PerformedProcedureStepDescription names it."""

    PA_AND_LATERAL = "CHEST (PA AND LAT)"
    PORTABLE_AP = "CHEST (PORTABLE AP)"


class Projection(str, Enum):
    """What an image shows, whatever its metadata says."""

    PA = "PA"
    AP = "AP"
    LATERAL = "LATERAL"


class ImageFile(str, Enum):
    """What lands on disk for an image listed in the metadata."""

    WRITTEN = "written"
    CORRUPT = "corrupt"
    MISSING = "missing"


class Fault(str, Enum):
    """A realistic irregularity planted in the demo tree so the pipeline's handling of it is exercised."""

    CORRUPT_IMAGE = "corrupt (truncated) JPEG"
    MISSING_IMAGE = "image listed in the metadata but missing on disk"
    BLANK_VIEW = "image with a blank ViewPosition"
    EMPTY_REPORT = "empty report file"
    MISSING_REPORT = "missing report file"
    IMPRESSION_ONLY = "impression-only report"


@dataclass(frozen=True)
class ImagePlan:
    """One image: its id, the ViewPosition written in the metadata, what is drawn, and how it is stored."""

    dicom_id: str
    view: str
    projection: Projection
    file: ImageFile
    seed: int


@dataclass(frozen=True)
class StudyPlan:
    """One study: its id, date, examination, findings, how its report is written, and its images."""

    study_id: str
    procedure: Procedure
    date: str
    time: str
    findings: StudyFindings
    report_form: ReportForm
    report_seed: int
    images: tuple[ImagePlan, ...]


@dataclass(frozen=True)
class SubjectPlan:
    """One patient: id, official split and anatomy, and their studies in date order."""

    subject_id: str
    split: Split
    anatomy: Anatomy
    studies: tuple[StudyPlan, ...]


@dataclass(frozen=True)
class PlantedFault:
    """Which fault was planted where (path relative to the dataset root, POSIX)."""

    fault: Fault
    subject_id: str
    study_id: str
    dicom_id: str
    path: str


@dataclass(frozen=True)
class Cohort:
    """The whole demo dataset as planned, subjects in id order."""

    subjects: tuple[SubjectPlan, ...]
    faults: tuple[PlantedFault, ...]


def plan_cohort(subjects: int, seed: int) -> Cohort:
    """Plan `subjects` patients with 2-4 studies each; split by patient, about 70/15/15."""
    if subjects < MIN_SUBJECTS:
        raise ValueError(f"the demo needs at least {MIN_SUBJECTS} subjects (one per split), got {subjects}")
    rng = np.random.default_rng(seed)
    subject_ids = sorted(str(10_000_000 + int(value)) for value in rng.choice(10_000_000, size=subjects, replace=False))
    splits = _subject_splits(rng, subjects)
    study_ids: set[str] = set()
    planned = [_plan_subject(rng, subject_id, split, study_ids) for subject_id, split in zip(subject_ids, splits)]
    return _plant_faults(rng, planned)


def _subject_splits(rng: np.random.Generator, subjects: int) -> list[Split]:
    held_out = max(1, round(0.15 * subjects))
    splits = [Split.VALIDATE] * held_out + [Split.TEST] * held_out + [Split.TRAIN] * (subjects - 2 * held_out)
    return [splits[index] for index in rng.permutation(subjects)]


def _plan_subject(rng: np.random.Generator, subject_id: str, split: Split, study_ids: set[str]) -> SubjectPlan:
    traits = sample_traits(rng)
    anatomy = sample_anatomy(rng)
    day = datetime.date(int(rng.integers(2110, 2190)), 1, 1) + datetime.timedelta(days=int(rng.integers(365)))
    studies = []
    for _ in range(int(rng.integers(2, 5))):
        procedure = Procedure.PORTABLE_AP if rng.random() < 0.45 else Procedure.PA_AND_LATERAL
        studies.append(
            StudyPlan(
                study_id=_new_study_id(rng, study_ids),
                procedure=procedure,
                date=day.strftime("%Y%m%d"),
                time=_study_time(rng),
                findings=sample_findings(rng, traits, portable=procedure is Procedure.PORTABLE_AP),
                report_form=ReportForm.FULL,
                report_seed=int(rng.integers(2**31)),
                images=_plan_images(rng, procedure),
            )
        )
        day += datetime.timedelta(days=int(rng.integers(1, 400)))
    return SubjectPlan(subject_id, split, anatomy, tuple(studies))


def _study_time(rng: np.random.Generator) -> str:
    """MIMIC's StudyTime: HHMMSS.fff written as a number (no leading zeros)."""
    hhmmss = int(rng.integers(24)) * 10000 + int(rng.integers(60)) * 100 + int(rng.integers(60))
    return f"{hhmmss}.{int(rng.integers(1000))}"


def _new_study_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        study_id = str(int(rng.integers(50_000_000, 60_000_000)))
        if study_id not in taken:
            taken.add(study_id)
            return study_id


def _dicom_id(rng: np.random.Generator) -> str:
    """MIMIC's dicom id format: five dash-separated groups of eight hex digits."""
    digits = rng.bytes(20).hex()
    return "-".join(digits[start : start + 8] for start in range(0, 40, 8))


def _plan_images(rng: np.random.Generator, procedure: Procedure) -> tuple[ImagePlan, ...]:
    """A PA-and-lateral exam: PA (sometimes two) and usually a lateral; a portable exam: one or two APs."""
    if procedure is Procedure.PORTABLE_AP:
        views = [Projection.AP] * (2 if rng.random() < 0.2 else 1)
    else:
        views = [Projection.PA] * (2 if rng.random() < 0.15 else 1)
        views += [Projection.LATERAL] if rng.random() < 0.85 else []
    return tuple(
        ImagePlan(
            dicom_id=_dicom_id(rng),
            view=("LL" if rng.random() < 0.2 else "LATERAL") if projection is Projection.LATERAL else projection.value,
            projection=projection,
            file=ImageFile.WRITTEN,
            seed=int(rng.integers(2**31)),
        )
        for projection in views
    )


def _plant_faults(rng: np.random.Generator, subjects: list[SubjectPlan]) -> Cohort:
    """Plant each fault in its own study, chosen at random among all studies."""
    locations = [(subject_index, study_index) for subject_index, subject in enumerate(subjects)
                 for study_index in range(len(subject.studies))]
    chosen = rng.choice(len(locations), size=len(Fault), replace=False)
    faults = []
    for fault, location in zip(Fault, chosen):
        subject_index, study_index = locations[int(location)]
        subject = subjects[subject_index]
        study, planted = _plant(rng, fault, subject.subject_id, subject.studies[study_index])
        studies = list(subject.studies)
        studies[study_index] = study
        subjects[subject_index] = replace(subject, studies=tuple(studies))
        faults.append(planted)
    return Cohort(tuple(subjects), tuple(faults))


_REPORT_FORMS = {
    Fault.EMPTY_REPORT: ReportForm.EMPTY,
    Fault.MISSING_REPORT: ReportForm.MISSING,
    Fault.IMPRESSION_ONLY: ReportForm.IMPRESSION_ONLY,
}
"""Faults planted by writing a study's report differently."""


def _plant(rng: np.random.Generator, fault: Fault, subject_id: str, study: StudyPlan) -> tuple[StudyPlan, PlantedFault]:
    if fault in _REPORT_FORMS:
        form = _REPORT_FORMS[fault]
        planted = PlantedFault(fault, subject_id, study.study_id, "", report_relpath(subject_id, study.study_id))
        return replace(study, report_form=form), planted
    frontal = next(image for image in study.images if image.projection is not Projection.LATERAL)
    if fault is Fault.BLANK_VIEW:
        image = replace(frontal, dicom_id=_dicom_id(rng), view="", seed=int(rng.integers(2**31)))
        images = study.images + (image,)
    else:
        image = replace(frontal, file=ImageFile.CORRUPT if fault is Fault.CORRUPT_IMAGE else ImageFile.MISSING)
        images = tuple(image if candidate is frontal else candidate for candidate in study.images)
    path = image_relpath(subject_id, study.study_id, image.dicom_id)
    planted = PlantedFault(fault, subject_id, study.study_id, image.dicom_id, path)
    return replace(study, images=images), planted
