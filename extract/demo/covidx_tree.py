"""Write a demo downstream dataset in the COVIDx CXR layout (the 3-class vocabulary): visible pneumonia and COVID-19.

`root/train_COVIDx9A.txt` and `root/test_COVIDx9A.txt` (the COVIDx v9A names, the lists the paper's code
reads), one image per line as the COVID-Net project writes them
(`patient-id file-name class source`), and the images in `root/train/` and `root/test/`, PNG or
JPEG by data source as in the real collection. The classes are drawn so that they can be told
apart: normal (no pathology), pneumonia (a dense lower-lobe opacity on one side) and COVID-19
(bilateral lower-zone opacities). COVID-19 patients often have several images (follow-up
films); test patients are not training patients. Faults as in the real files: one listed image
is missing on disk, and one file name is listed twice.

The default size gives a 1% training subset of about ten images (the reader holds out 20% of
the training patients for validation).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image

from adaptor_vlp.extract.datasets.covidx import THREE_CLASSES
from adaptor_vlp.extract.datasets.covidx_files import PUBLISHED_LISTS
from adaptor_vlp.extract.demo.anatomy import sample_anatomy
from adaptor_vlp.extract.demo.exposure import PORTABLE_RATE, Exposure, drawing_seed, expose
from adaptor_vlp.extract.demo.findings import AirspaceAppearance, AirspaceDisease, Certainty, Side, StudyFindings
from adaptor_vlp.extract.demo.preflight import check_empty_folder, check_image_count
from adaptor_vlp.extract.demo.radiograph import encode_jpeg

TRAIN_FILE, TEST_FILE = PUBLISHED_LISTS
IMAGE_FOLDERS = {TRAIN_FILE: "train", TEST_FILE: "test"}
"""The list files the demo writes and the folder each list's images lie in."""

MIN_IMAGES = 24
"""Enough images for a test list and a patient-wise validation carve-out with every class likely in each."""
DEFAULT_IMAGES = 1200
_TEST_SHARE = 0.15
_CLASS_WEIGHTS = (0.45, 0.35, 0.2)
"""Patients per class: normal, pneumonia, COVID-19 (COVID-19 patients have about two images each)."""
_FOLLOW_UP_RATE = 0.5
"""Chance that a COVID-19 patient has one more image (repeatedly: 1, 2, 3... films)."""


class _Source(str, Enum):
    """The collection an image comes from, which decides its file format (as in COVIDx)."""

    DEMO_PNG = "demo-png"
    DEMO_JPEG = "demo-jpeg"

    @property
    def suffix(self) -> str:
        return ".png" if self is _Source.DEMO_PNG else ".jpg"


@dataclass(frozen=True)
class _DemoImage:
    """One planned image: its patient, label file, file name, class, source and exposure."""

    patient: str
    label_file: str
    file_name: str
    class_name: str
    source: _Source
    exposure: Exposure

    @property
    def path(self) -> str:
        return f"{IMAGE_FOLDERS[self.label_file]}/{self.file_name}"

    @property
    def line(self) -> str:
        return f"{self.patient} {self.file_name} {self.class_name} {self.source.value}"


@dataclass(frozen=True)
class CovidxDemoSummary:
    """What `write_demo_covidx` wrote."""

    root: Path
    patients: int
    images_per_file: dict[str, int]
    images_per_class: dict[str, int]
    missing_image: str
    duplicate_listing: str

    def lines(self) -> list[str]:
        """A human-readable account, one line per fact."""
        listed = ", ".join(f"{name} {count}" for name, count in self.images_per_file.items())
        classes = ", ".join(f"{name} {count}" for name, count in self.images_per_class.items())
        return [
            f"demo COVIDx CXR tree at {self.root}",
            f"{self.patients} patients; images listed: {listed}; by class: {classes}",
            "planted faults:",
            f"  image listed but missing on disk: {self.missing_image}",
            f"  file name listed twice: {self.duplicate_listing}",
        ]


def write_demo_covidx(out: Path, images: int = DEFAULT_IMAGES, seed: int = 0) -> CovidxDemoSummary:
    """Write a deterministic demo COVIDx tree (same seed, same bytes) into `out`, which must be empty or absent."""
    check_image_count("COVIDx", images, MIN_IMAGES)
    check_empty_folder(out)
    rng = np.random.default_rng(seed)
    planned = _plan_images(rng, images)
    missing, duplicated = (planned[int(index)] for index in rng.choice(len(planned), size=2, replace=False))
    for image in planned:
        if image is not missing:
            path = out / image.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_encode(expose(image.exposure).pixels, image.source))
    listings = {name: [image.line for image in planned if image.label_file == name] for name in (TRAIN_FILE, TEST_FILE)}
    listings[duplicated.label_file].append(duplicated.line)
    for name, lines in listings.items():
        (out / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return CovidxDemoSummary(
        root=out,
        patients=len({image.patient for image in planned}),
        images_per_file={name: len(lines) for name, lines in listings.items()},
        images_per_class={name: sum(image.class_name == name for image in planned) for name in THREE_CLASSES},
        missing_image=missing.path,
        duplicate_listing=duplicated.line,
    )


def _plan_images(rng: np.random.Generator, count: int) -> list[_DemoImage]:
    """Patients, each in train or test, with their images until `count` images are planned."""
    planned: list[_DemoImage] = []
    patients = 0
    while len(planned) < count:
        patients += 1
        patient = str(patients)
        label_file = TEST_FILE if rng.random() < _TEST_SHARE else TRAIN_FILE
        class_name = THREE_CLASSES[int(rng.choice(len(THREE_CLASSES), p=_CLASS_WEIGHTS))]
        source = (_Source.DEMO_PNG, _Source.DEMO_JPEG)[int(rng.integers(2))]
        anatomy = sample_anatomy(rng)
        films = 1
        while class_name == "COVID-19" and rng.random() < _FOLLOW_UP_RATE:
            films += 1
        for film in range(min(films, count - len(planned))):
            portable = bool(rng.random() < PORTABLE_RATE)
            exposure = Exposure(anatomy, portable, _findings(class_name, rng), drawing_seed(rng))
            file_name = f"demo-{patient}-{film + 1}{source.suffix}"
            planned.append(_DemoImage(patient, label_file, file_name, class_name, source, exposure))
    return planned


def _findings(class_name: str, rng: np.random.Generator) -> StudyFindings:
    """What each class shows: nothing, one lung's lower-lobe consolidation, or opacities in both lower zones."""
    if class_name == "pneumonia":
        side = (Side.RIGHT, Side.LEFT)[int(rng.integers(2))]
        return StudyFindings(airspace=AirspaceDisease(side, AirspaceAppearance.CONSOLIDATION, Certainty.DEFINITE))
    if class_name == "COVID-19":
        return StudyFindings(airspace=AirspaceDisease(Side.BOTH, AirspaceAppearance.OPACITY, Certainty.DEFINITE))
    return StudyFindings()


def _encode(pixels: np.ndarray, source: _Source) -> bytes:
    if source is _Source.DEMO_JPEG:
        return encode_jpeg(pixels)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
