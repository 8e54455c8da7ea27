"""Split MIMIC-CXR free-text reports into their sections and pick the text a text backbone embeds.

MIMIC-CXR reports are free text with headers such as `EXAMINATION:`, `INDICATION:`, `FINDINGS:` and
`IMPRESSION:`, written in capitals or not, with the text on the header's line or on the next,
wrapped lines, `___` de-identification blanks and `____` separator lines. The paper embeds
IMPRESSION + FINDINGS; a report without them, or too short to carry meaning, is kept and flagged
with an issue so that extraction can mask it and say why, rather than silently dropping it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Sequence

DEFAULT_MIN_WORDS = 3
"""Fewer words than this ("Normal.", "No change.") carry too little for a report embedding."""

EMPTY_REPORT = "empty report"


class Section(str, Enum):
    """The sections a chest radiograph report is divided into."""

    PREAMBLE = "preamble"
    EXAMINATION = "examination"
    INDICATION = "indication"
    HISTORY = "history"
    TECHNIQUE = "technique"
    COMPARISON = "comparison"
    FINDINGS = "findings"
    IMPRESSION = "impression"
    NOTIFICATION = "notification"
    RECOMMENDATION = "recommendation"
    ADDENDUM = "addendum"
    WET_READ = "wet read"


DEFAULT_SECTIONS: tuple[Section, ...] = (Section.IMPRESSION, Section.FINDINGS)
"""The paper's choice: IMPRESSION followed by FINDINGS."""

_FINDINGS_AND_IMPRESSION = (Section.FINDINGS, Section.IMPRESSION)

_HEADER_SECTIONS: dict[str, tuple[Section, ...]] = {
    "EXAMINATION": (Section.EXAMINATION,),
    "EXAM": (Section.EXAMINATION,),
    "TYPE OF EXAMINATION": (Section.EXAMINATION,),
    "PROCEDURE": (Section.EXAMINATION,),
    "INDICATION": (Section.INDICATION,),
    "INDICATIONS": (Section.INDICATION,),
    "CLINICAL INDICATION": (Section.INDICATION,),
    "REASON FOR EXAM": (Section.INDICATION,),
    "REASON FOR EXAMINATION": (Section.INDICATION,),
    "REASON FOR STUDY": (Section.INDICATION,),
    "HISTORY": (Section.HISTORY,),
    "CLINICAL HISTORY": (Section.HISTORY,),
    "PATIENT HISTORY": (Section.HISTORY,),
    "TECHNIQUE": (Section.TECHNIQUE,),
    "COMPARISON": (Section.COMPARISON,),
    "COMPARISONS": (Section.COMPARISON,),
    "FINDINGS": (Section.FINDINGS,),
    "FINDING": (Section.FINDINGS,),
    "IMPRESSION": (Section.IMPRESSION,),
    "IMPRESSIONS": (Section.IMPRESSION,),
    "CONCLUSION": (Section.IMPRESSION,),
    "CONCLUSIONS": (Section.IMPRESSION,),
    "FINDINGS AND IMPRESSION": _FINDINGS_AND_IMPRESSION,
    "FINDINGS AND IMPRESSIONS": _FINDINGS_AND_IMPRESSION,
    "IMPRESSION AND FINDINGS": _FINDINGS_AND_IMPRESSION,
    "FINDINGS/IMPRESSION": _FINDINGS_AND_IMPRESSION,
    "FINDINGS IMPRESSION": _FINDINGS_AND_IMPRESSION,
    "PROVISIONAL FINDINGS IMPRESSION (PFI)": _FINDINGS_AND_IMPRESSION,
    "NOTIFICATION": (Section.NOTIFICATION,),
    "NOTIFICATIONS": (Section.NOTIFICATION,),
    "RECOMMENDATION": (Section.RECOMMENDATION,),
    "RECOMMENDATIONS": (Section.RECOMMENDATION,),
    "RECOMMENDATION(S)": (Section.RECOMMENDATION,),
    "ADDENDUM": (Section.ADDENDUM,),
    "WET READ": (Section.WET_READ,),
}
"""Known headers (normalised: upper case, single spaces, `&` as AND) and the sections they open.

Other `WORD:` prefixes (`LUNGS: clear.`, `PA AND LATERAL VIEWS OF THE CHEST:`) stay text of the
section they are in, so structured findings are not cut out of FINDINGS."""

_HEADER_LINE = re.compile(r"^\s*(?P<header>[A-Za-z][A-Za-z ()/&,\-]*?)\s*:(?P<rest>.*)$")
_TITLE_LINE = re.compile(r"^\s*FINAL\s+REPORT\s*$", re.IGNORECASE)
_SEPARATOR_LINE = re.compile(r"^\s*[_\-=*]{4,}\s*$")
_INLINE_HEADER = re.compile(
    r"(?<=[.!?])[ \t]+(?=(?:"
    + "|".join(re.escape(name).replace(r"\ ", r"\s+") for name in sorted(_HEADER_SECTIONS, key=len, reverse=True))
    + r")\s*:)"
)


@dataclass(frozen=True)
class ReportSection:
    """One section of a report: its header as written, the sections it stands for, its text."""

    header: str
    covers: tuple[Section, ...]
    text: str


@dataclass(frozen=True)
class ReportText:
    """The text a backbone embeds for one report, and why it is unusable ("" when usable)."""

    text: str
    issue: str

    @property
    def usable(self) -> bool:
        """True when no issue was found."""
        return self.issue == ""


def parse_sections(raw: str) -> tuple[ReportSection, ...]:
    """Split a report into sections in order; text before the first header is the PREAMBLE.

    Section text has its whitespace collapsed to single spaces. The `FINAL REPORT` title and
    separator lines are dropped. A `FINDINGS AND IMPRESSION:` section covers both sections.
    """
    sections: list[ReportSection] = []
    header, covers, lines = "", (Section.PREAMBLE,), []
    for line in _INLINE_HEADER.sub("\n", raw).splitlines():
        if _TITLE_LINE.match(line) or _SEPARATOR_LINE.match(line):
            continue
        opened = _match_header(line)
        if opened is None:
            lines.append(line)
            continue
        sections.append(ReportSection(header, covers, normalise_whitespace(" ".join(lines))))
        header, covers, first_line = opened
        lines = [first_line]
    sections.append(ReportSection(header, covers, normalise_whitespace(" ".join(lines))))
    return tuple(section for section in sections if section.header or section.text)


def report_text(
    raw: str,
    sections: Sequence[Section | str] = DEFAULT_SECTIONS,
    min_words: int = DEFAULT_MIN_WORDS,
) -> ReportText:
    """The wanted sections' text joined in the order asked (each section once), with any issue.

    Issues: `empty report`; `no <SECTIONS> section` when none of the wanted sections is present
    (text is then empty); `too short (N words)` when the joined text has fewer than `min_words`
    words (the short text is kept).
    """
    wanted = parse_section_names(sections)
    if not raw.strip():
        return ReportText("", EMPTY_REPORT)
    parsed = parse_sections(raw)
    chosen = _sections_in_wanted_order(parsed, wanted)
    if not chosen:
        names = " or ".join(sorted(section.value.upper() for section in wanted))
        return ReportText("", f"no {names} section")
    text = " ".join(section.text for section in chosen if section.text)
    words = len(text.split())
    if words < min_words:
        return ReportText(text, f"too short ({words} words)")
    return ReportText(text, "")


def parse_section_names(names: Iterable[Section | str]) -> tuple[Section, ...]:
    """Section names (enum members or their values, any case) as `Section`s; a clear error otherwise."""
    parsed = []
    for name in names:
        try:
            parsed.append(Section(name.lower() if isinstance(name, str) else name))
        except ValueError as error:
            known = ", ".join(section.value for section in Section)
            raise ValueError(f"unknown report section {name!r}; known sections: {known}") from error
    if not parsed:
        raise ValueError("no report sections asked for: name at least one, e.g. impression,findings")
    return tuple(parsed)


def normalise_whitespace(text: str) -> str:
    """Collapse runs of whitespace (line breaks included) into single spaces and trim the ends."""
    return " ".join(text.split())


def _match_header(line: str) -> tuple[str, tuple[Section, ...], str] | None:
    match = _HEADER_LINE.match(line)
    if match is None:
        return None
    header = " ".join(match["header"].replace("&", " AND ").split())
    covers = _HEADER_SECTIONS.get(header.upper())
    if covers is None:
        return None
    return header, covers, match["rest"]


def _sections_in_wanted_order(
    parsed: tuple[ReportSection, ...], wanted: tuple[Section, ...]
) -> list[ReportSection]:
    chosen: list[ReportSection] = []
    for name in wanted:
        for section in parsed:
            if name in section.covers and not any(section is seen for seen in chosen):
                chosen.append(section)
    return chosen
