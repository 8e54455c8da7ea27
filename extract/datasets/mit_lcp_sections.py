"""MIT-LCP's MIMIC-CXR section parser, ported, and the report text the paper's code built from it.

The paper's published code (holajoa/Adaptor-VL-SSL, through its vendored MGCA) read each study's
IMPRESSION and FINDINGS from `mimic_cxr_sectioned.csv`, the file MIT-LCP's
`txt/create_section_files.py` writes with `txt/section_parser.py` (MIT-LCP/mimic-cxr; MGCA's
`mgca/preprocess/utils.py` carries a copy). This module is a faithful port of `section_text`,
`normalize_section_names` and `custom_mimic_cxr_rules` (section_parser.py lines 5-270) and of the
per-study choice `create_section_files.py` makes (lines 69-129), so the `published` text is the
text the published code embedded:

- a header is `\\n ` + upper-case letters, spaces and `()/,-` + `:` + whitespace (so every
  such line is a header, `PA AND LATERAL VIEWS OF THE CHEST:` included, and mapped to a
  section by `normalize_section_names`); its text runs to the next header;
- the *last* section named impression (findings) is the study's impression (findings), stripped;
- the studies of `custom_mimic_cxr_rules` are left out of `mimic_cxr_sectioned.csv` (their
  `continue` skips the row), so the published code had no text for them;
- pandas read the CSV, so an empty section, or one whose text is one of pandas' default
  missing-value strings (`NA`, `None`, ...), is missing; MGCA's `preprocess/mimic_cxr.py` drops
  studies with neither (line 23, 44), fills a missing one with " " (lines 82-83), and its
  dataset joins IMPRESSION + " " + FINDINGS (dataset/dataset.py lines 92-95).

Ported from MIT-LCP/mimic-cxr under its MIT licence:

    Copyright (c) 2019 MIT Laboratory for Computational Physiology

    Permission is hereby granted, free of charge, to any person obtaining a copy of this software
    and associated documentation files (the "Software"), to deal in the Software without
    restriction, including without limitation the rights to use, copy, modify, merge, publish,
    distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
    Software is furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all copies or
    substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
    BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
    NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
    DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from adaptor_vlp.extract.datasets.report_sections import EMPTY_REPORT, ReportText, normalise_whitespace

NO_SECTIONED_ROW = "in MIT-LCP's custom rules, so not in mimic_cxr_sectioned.csv"
NO_IMPRESSION_OR_FINDINGS = "no IMPRESSION or FINDINGS section (MIT-LCP's parser)"

PANDAS_MISSING_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
})
"""The cell texts `pandas.read_csv` reads as missing by default (pandas 2.0.0, as pinned by the published code)."""

_SECTION_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)

_FREQUENT_SECTIONS = {
    "preamble": "preamble", "impression": "impression", "comparison": "comparison", "indication": "indication",
    "findings": "findings", "examination": "examination", "technique": "technique", "history": "history",
    "comparisons": "comparison", "clinical history": "history", "reason for examination": "indication",
    "notification": "notification", "reason for exam": "indication", "clinical information": "history",
    "exam": "examination", "clinical indication": "indication", "conclusion": "impression",
    "chest, two views": "findings", "recommendation(s)": "recommendations", "type of examination": "examination",
    "reference exam": "comparison", "patient history": "history", "addendum": "addendum",
    "comparison exam": "comparison", "date": "date", "comment": "comment", "findings and impression": "impression",
    "wet read": "wet read", "comparison film": "comparison", "recommendations": "recommendations",
    "findings/impression": "impression", "pfi": "history", "recommendation": "recommendations",
    "wetread": "wet read", "ndication": "impression", "impresson": "impression", "imprression": "impression",
    "imoression": "impression", "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression",
    "findings/ impression": "impression", "finding": "findings", "findins": "findings", "findindgs": "findings",
    "findgings": "findings", "findngs": "findings", "findnings": "findings", "finidngs": "findings",
    "idication": "indication", "reference findings": "findings", "comparision": "comparison",
    "comparsion": "comparison", "comparrison": "comparison", "comparisions": "comparison",
}
_FINDINGS_WORDS = re.compile("({})".format("|".join([
    "chest", "portable", "pa and lateral", "lateral and pa", "ap and lateral", "lateral and ap", "frontal and",
    "two views", "frontal view", "pa view", "ap view", "one view", "lateral view", "bone window", "frontal upright",
    "frontal semi-upright", "ribs", "pa and lat",
])))
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")

CUSTOM_SECTION_NAMES = frozenset({
    "s50913680", "s59363654", "s59279892", "s59768032", "s57936451", "s50058765", "s53356173", "s53202765",
    "s50808053", "s51966317", "s50743547", "s56451190", "s59067458", "s59215320", "s55124749", "s54365831",
    "s59087630", "s58157373", "s56482935", "s58375018", "s54654948", "s55157853", "s51491012",
})
"""Studies `custom_mimic_cxr_rules` names a section for (section_parser.py lines 207-231)."""
CUSTOM_INDICES = frozenset({
    "s50525523", "s57564132", "s59982525", "s53488209", "s54875119", "s50196495", "s56579911", "s52648681",
    "s59889364", "s53514462", "s59505494", "s53182247", "s51410602", "s56412866", "s54986978", "s59003148",
    "s57150433", "s56760320", "s59562049", "s52674888", "s55258338", "s59330497", "s52119491", "s58235663",
    "s50798377", "s54168089", "s53071062", "s56724958", "s54231141", "s53607029", "s52035334",
})
"""Studies `custom_mimic_cxr_rules` gives character ranges for (section_parser.py lines 233-267)."""


@dataclass(frozen=True)
class SectionedText:
    """A report cut as `section_text` cuts it: each section's raw text and its normalised name, in order."""

    sections: tuple[str, ...]
    names: tuple[str, ...]

    def last(self, name: str) -> str | None:
        """The text of the last section with this name, stripped (create_section_files.py's choice), or None."""
        for section, section_name in zip(reversed(self.sections), reversed(self.names)):
            if section_name == name:
                return section.strip()
        return None


def section_text(text: str) -> SectionedText:
    """MIT-LCP's `section_text`: the report's sections and their names (section indices left out)."""
    sections: list[str] = []
    names: list[str] = []
    found = _SECTION_HEADER.search(text, 0)
    if found:
        sections.append(text[0:found.start(1)])
        names.append("preamble")
        while found:
            current = found.group(1).lower()
            start = found.end()
            skip = text[start:].find("\n")
            if skip == -1:
                skip = 0
            found = _SECTION_HEADER.search(text, start + skip)
            end = len(text) if found is None else found.start()
            sections.append(text[start:end])
            names.append(current)
    else:
        sections.append(text)
        names.append("full report")
    names = normalize_section_names(names)
    for i in reversed(range(len(names))):
        if names[i] in ("impression", "findings") and sections[i].strip() == "":
            sections.pop(i)
            names.pop(i)
    if "impression" not in names and "findings" not in names and "\n \n" in sections[-1]:
        sections.append("\n \n".join(sections[-1].split("\n \n")[1:]))
        sections[-2] = sections[-2].split("\n \n")[0]
        names.append("last_paragraph")
    return SectionedText(tuple(sections), tuple(names))


def normalize_section_names(names: list[str]) -> list[str]:
    """MIT-LCP's `normalize_section_names`: known names, then any main section contained, then findings words."""
    normalised = [name.lower().strip() for name in names]
    for i, name in enumerate(normalised):
        if name in _FREQUENT_SECTIONS:
            normalised[i] = _FREQUENT_SECTIONS[name]
            continue
        main = next((section for section in _MAIN_SECTIONS if section in name), None)
        if main is not None:
            normalised[i] = main
            continue
        if _FINDINGS_WORDS.search(name) is not None:
            normalised[i] = "findings"
    return normalised


def published_report_text(raw: str, study_id: str) -> ReportText:
    """The text the published code embedded for one study before cleaning: IMPRESSION + " " + FINDINGS.

    `study_id` is MIMIC's numeric study id (the report file is `s<study_id>.txt`). The text has
    its whitespace collapsed (MGCA's cleaning splits on neither whitespace nor line breaks, so
    this changes none of its output). A study the published code had no text for is kept with the
    reason as its issue.
    """
    stem = f"s{study_id}"
    if stem in CUSTOM_INDICES or stem in CUSTOM_SECTION_NAMES:
        return ReportText("", NO_SECTIONED_ROW)
    if not raw.strip():
        return ReportText("", EMPTY_REPORT)
    sectioned = section_text(raw)
    impression, findings = (_as_pandas_reads(sectioned.last(name)) for name in ("impression", "findings"))
    if impression is None and findings is None:
        return ReportText("", NO_IMPRESSION_OR_FINDINGS)
    return ReportText(normalise_whitespace(f"{impression or ' '} {findings or ' '}"), "")


def _as_pandas_reads(cell: str | None) -> str | None:
    """A CSV cell as `pandas.read_csv` reads it back: None (csv.writer writes "") and missing-value strings are None."""
    return None if cell is None or cell in PANDAS_MISSING_STRINGS else cell
