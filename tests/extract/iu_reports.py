"""The 3,955 real Indiana University chest X-ray reports torchxrayvision ships, written as MIMIC-CXR report files.

`data/NLMCXR_reports.tgz` inside the installed torchxrayvision package (read in place, never
copied into the repository) holds one XML file per report with COMPARISON, INDICATION,
FINDINGS and IMPRESSION texts (some empty). `write_mimic_tree` lays them out as a MIMIC-CXR-JPG
tree (tables, one report file per study, placeholder images the manifest reader only stats), so
the MIMIC reader and its section parsers run on real report language.
"""
from __future__ import annotations

import csv
import tarfile
import textwrap
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from adaptor_vlp.extract.datasets.mimic_cxr import (
    CHEXPERT_COLUMNS,
    METADATA_COLUMNS,
    SPLIT_COLUMNS,
    image_relpath,
    report_relpath,
)

IU_REPORTS = Path(find_spec("torchxrayvision").submodule_search_locations[0]) / "data" / "NLMCXR_reports.tgz"
IU_SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")
WRAP_COLUMNS = 76
"""MIMIC-CXR report lines are one space and at most 76 characters of text."""


@dataclass(frozen=True)
class IUReport:
    """One IU report: its number, and its section texts by label in the XML's order ("" when empty)."""

    number: int
    sections: dict[str, str]

    @property
    def study_id(self) -> str:
        """A MIMIC-style numeric study id (MIMIC's are 8 digits starting with 5)."""
        return str(50_000_000 + self.number)

    @property
    def subject_id(self) -> str:
        return str(10_000_000 + self.number)


@lru_cache(maxsize=1)
def iu_reports() -> tuple[IUReport, ...]:
    """Every report of the archive, by report number."""
    reports = []
    with tarfile.open(IU_REPORTS) as archive:
        for member in archive.getmembers():
            if not member.name.endswith(".xml"):
                continue
            root = ElementTree.fromstring(archive.extractfile(member).read())
            sections = {node.get("Label"): (node.text or "") for node in root.iter("AbstractText")}
            reports.append(IUReport(int(Path(member.name).stem), sections))
    return tuple(sorted(reports, key=lambda report: report.number))


def mimic_style(report: IUReport, wrapped: bool) -> str:
    """The report as a MIMIC-CXR file: a centred title, ` HEADER:  text`, sections apart by ` ` lines.

    `wrapped`: the text wrapped at 76 columns, FINDINGS and IMPRESSION starting on the line after
    their header, as most MIMIC reports are; else each section's text on its header's line.
    """
    lines = [" " * 33 + "FINAL REPORT"]
    for label in IU_SECTIONS:
        text = report.sections.get(label, "")
        if not text:
            continue
        if wrapped:
            lines += [f" {label}: ", " "] + [f" {line}" for line in textwrap.wrap(text, WRAP_COLUMNS)]
        else:
            lines.append(f" {label}:  {text}")
        lines.append(" ")
    return "\n".join(lines[:-1]) + "\n"


def write_mimic_tree(root: Path, wrapped: bool = False) -> Path:
    """A MIMIC-CXR-JPG tree with one PA image per IU report, every study in the train split."""
    metadata, splits = [], []
    for report in iu_reports():
        dicom = f"iu{report.number}"
        metadata.append([dicom, report.subject_id, report.study_id, "CHEST", "PA", "2048", "2048", "20130801",
                         "120000", "CHEST", "postero-anterior", "Erect"])
        splits.append([dicom, report.study_id, report.subject_id, "train"])
        image = root / image_relpath(report.subject_id, report.study_id, dicom)
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"\xff\xd8 not decoded by the manifest reader")
        (root / report_relpath(report.subject_id, report.study_id)).write_text(mimic_style(report, wrapped),
                                                                              encoding="utf-8")
    for name, columns, rows in (("metadata", METADATA_COLUMNS, metadata), ("split", SPLIT_COLUMNS, splits),
                                ("chexpert", CHEXPERT_COLUMNS, [])):
        with open(root / f"mimic-cxr-2.0.0-{name}.csv", "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            writer.writerows(rows)
    return root
