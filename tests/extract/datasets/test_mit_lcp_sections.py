"""MIT-LCP's section parser (ported) beside ours: every difference, on crafted MIMIC reports and 3,955 real IU reports.

Each case below is one way the two parsers differ (ARCHITECTURE.md, "Report sections: ours and
MIT-LCP's", lists them and says which behaviour each protocol keeps). `published_report_text` is
the text the published code embedded before cleaning; `report_text` is ours.
"""
import pytest

from adaptor_vlp.extract.datasets.mit_lcp_sections import (
    NO_IMPRESSION_OR_FINDINGS,
    NO_SECTIONED_ROW,
    published_report_text,
    section_text,
)
from adaptor_vlp.extract.datasets.report_sections import report_text
from tests.extract.iu_reports import iu_reports, mimic_style

TITLE = " " * 33 + "FINAL REPORT\n"

CASES = [
    pytest.param(
        TITLE + " FINDINGS: \n \n Heart size is normal.\n LUNGS: Clear.\n \n IMPRESSION: \n \n No acute process.\n",
        "No acute process. Heart size is normal. LUNGS: Clear.",
        "No acute process. Heart size is normal.",
        id="an upper-case WORD: line ends MIT-LCP's section (a section of its own)"),
    pytest.param(
        TITLE + " Findings: Lungs are clear.\n \n Impression: No acute process.\n",
        "No acute process. Lungs are clear.",
        "",
        id="title-case headers are headers only to ours"),
    pytest.param(
        TITLE + " FINDINGS:  Lungs are clear. IMPRESSION:  No acute process.\n",
        "No acute process. Lungs are clear.",
        "Lungs are clear. IMPRESSION: No acute process.",
        id="a header after a sentence on the same line opens a section only in ours"),
    pytest.param(
        TITLE + " FINDINGS:  Small effusion.\n \n FINDINGS:  Lungs otherwise clear.\n \n IMPRESSION:  Effusion.\n",
        "Effusion. Small effusion. Lungs otherwise clear.",
        "Effusion. Lungs otherwise clear.",
        id="of repeated sections MIT-LCP keeps the last, ours joins all"),
    pytest.param(
        TITLE + " FINDINGS:  Lungs are clear.\n ______________________________________________\n"
                " IMPRESSION:  No acute process.\n",
        "No acute process. Lungs are clear.",
        "No acute process. Lungs are clear. ______________________________________________",
        id="separator lines stay in MIT-LCP's sections (MGCA's \\w+ keeps underscores as a token)"),
    pytest.param(
        TITLE + " INDICATION:  Cough.\n \n PA AND LATERAL VIEWS OF THE CHEST:  Lungs are clear.\n",
        "",
        "Lungs are clear.",
        id="an unknown upper-case header naming a view is FINDINGS to MIT-LCP, text of the section before to ours"),
    pytest.param(
        " IMPRESSION:  No acute cardiopulmonary process.\n",
        "No acute cardiopulmonary process.",
        "",
        id="a header on the file's first line is no header to MIT-LCP (it needs a line break before it)"),
    pytest.param(
        TITLE + " FINDINGS:  None\n \n IMPRESSION:  No acute process.\n",
        "No acute process. None",
        "No acute process.",
        id="a section reading None is missing once pandas read MIT-LCP's table"),
    pytest.param(
        TITLE + " FINDINGS AND IMPRESSION:  Lungs are clear.\n",
        "Lungs are clear.",
        "Lungs are clear.",
        id="FINDINGS AND IMPRESSION gives the same text (MIT-LCP: an impression; ours: both, once)"),
]


@pytest.mark.parametrize("raw, ours, published", CASES)
def test_each_difference_between_the_parsers(raw, ours, published):
    assert report_text(raw, min_words=0).text == ours
    assert published_report_text(raw, "50000001").text == published


def test_a_study_without_impression_or_findings_has_no_published_text():
    result = published_report_text(TITLE + " INDICATION:  Cough.\n \n COMPARISON:  None.\n", "50000001")
    assert (result.text, result.issue) == ("", NO_IMPRESSION_OR_FINDINGS)


def test_the_studies_of_mit_lcps_custom_rules_have_no_published_text():
    raw = TITLE + " FINDINGS:  Lungs are clear.\n \n IMPRESSION:  No acute process.\n"
    for study in ("50913680", "58235663"):  # a custom section name, a custom character range
        assert published_report_text(raw, study).issue == NO_SECTIONED_ROW
    assert report_text(raw).usable


def test_section_names_are_normalised_as_mit_lcp_does():
    sectioned = section_text(TITLE + " EXAM:  Chest.\n \n CLINICAL HISTORY:  Cough.\n \n IMPRESSON:  Clear.\n"
                                     " \n PORTABLE UPRIGHT VIEW:  Lines in place.\n")
    assert sectioned.names == ("preamble", "examination", "history", "impression", "findings")


@pytest.mark.slow
@pytest.mark.parametrize("wrapped, differing", [(False, {2415}), (True, {2415, 3608})])
def test_on_the_real_iu_reports_the_parsers_differ_only_where_a_report_carries_header_like_text(wrapped, differing):
    """IU report 2415's IMPRESSION holds a whole pasted report ("IMPRESSION: Exam: ... FINDINGS: ..."): ours
    opens sections at the pasted headers, MIT-LCP does not (they are inline). Wrapped at 76 columns, report
    3608's FINDINGS has a line starting "XXXX:" (IU's de-identification mark): MIT-LCP ends FINDINGS there."""
    found = set()
    for report in iu_reports():
        raw = mimic_style(report, wrapped)
        ours, published = report_text(raw, min_words=0), published_report_text(raw, report.study_id)
        if (ours.text, ours.usable) != (published.text, published.usable):
            found.add(report.number)
    assert found == differing
