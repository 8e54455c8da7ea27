"""Report section parsing and IMPRESSION + FINDINGS selection on realistic MIMIC-CXR report variants."""
import pytest

from adaptor_vlp.extract.datasets.report_sections import (
    DEFAULT_MIN_WORDS,
    Section,
    parse_section_names,
    parse_sections,
    report_text,
)

# Report text as MIMIC-CXR writes it: the trailing spaces are data.
MODERN = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  None.
 
 FINDINGS: 
 
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""  # noqa: W291, W293

FINDINGS_TEXT = (
    "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities that most "
    "likely represent nipple shadows. The cardiomediastinal silhouette is normal."
)


def test_modern_report_splits_into_its_sections_in_order():
    sections = parse_sections(MODERN)
    assert [section.covers[0] for section in sections] == [
        Section.EXAMINATION, Section.INDICATION, Section.TECHNIQUE, Section.COMPARISON, Section.FINDINGS,
        Section.IMPRESSION,
    ]
    assert sections[1].text == "___F with new onset ascites // eval for infection"
    assert sections[4].text == FINDINGS_TEXT


def test_impression_comes_first_then_findings_with_whitespace_collapsed():
    result = report_text(MODERN)
    assert result.usable
    assert result.text == "No acute cardiopulmonary process. " + FINDINGS_TEXT


def test_section_order_is_configurable():
    assert report_text(MODERN, sections=("findings",)).text == FINDINGS_TEXT
    assert report_text(MODERN, sections=(Section.FINDINGS, Section.IMPRESSION)).text.startswith("There is no focal")


NO_ACUTE = "No acute cardiopulmonary process."


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param(f" IMPRESSION:  {NO_ACUTE}\n", NO_ACUTE, id="same-line"),
        pytest.param(" IMPRESSION: \n \n No acute cardiopulmonary\n process.\n", NO_ACUTE, id="next-line-wrapped"),
        pytest.param(f"Impression: {NO_ACUTE}", NO_ACUTE, id="title-case"),
        pytest.param(f"impression:{NO_ACUTE.lower()}", NO_ACUTE.lower(), id="lower-no-space"),
        pytest.param("  IMPRESSION   :   No acute   cardiopulmonary process.", NO_ACUTE, id="extra-spaces"),
        pytest.param(f"IMPRESSIONS:\n{NO_ACUTE}", NO_ACUTE, id="plural"),
        pytest.param(f"CONCLUSION:\n{NO_ACUTE}", NO_ACUTE, id="conclusion"),
        pytest.param(f"\tIMPRESSION:\t{NO_ACUTE}", NO_ACUTE, id="tabs"),
    ],
)
def test_impression_header_variants(raw, expected):
    result = report_text(raw)
    assert (result.text, result.issue) == (expected, "")


@pytest.mark.parametrize("header", ["FINDINGS AND IMPRESSION", "FINDINGS  AND   IMPRESSION", "Findings and Impression",
                                    "IMPRESSION AND FINDINGS", "FINDINGS/IMPRESSION", "FINDINGS & IMPRESSION"])
def test_combined_findings_and_impression_section_is_taken_once(header):
    raw = (
        f" EXAMINATION:  CHEST (PORTABLE AP)\n {header}: \n"
        " Endotracheal tube in standard position.  No pneumothorax.\n"
    )
    result = report_text(raw)
    assert result.text == "Endotracheal tube in standard position. No pneumothorax."
    assert result.usable
    assert report_text(raw, sections=("findings",)).text == result.text


def test_impression_only_report_is_usable():
    raw = (
        "                                 FINAL REPORT\n"
        " IMPRESSION:  Moderate right pleural effusion.  Cardiomegaly.\n"
    )
    assert report_text(raw) == report_text(raw, sections=("impression",))
    assert report_text(raw).text == "Moderate right pleural effusion. Cardiomegaly."


def test_findings_only_report_is_usable():
    raw = " INDICATION:  Cough.\n FINDINGS:  Lungs are clear.  No effusion.  Heart size normal.\n"
    result = report_text(raw)
    assert result == report_text(raw, sections=("findings",))
    assert result.text == "Lungs are clear. No effusion. Heart size normal."


def test_report_without_headers_is_flagged_not_dropped():
    raw = (
        "                                 FINAL REPORT\n PA AND LATERAL CHEST RADIOGRAPHS\n \n The lungs are clear.  "
        "There is no pleural effusion.\n"
    )
    result = report_text(raw)
    assert result.text == ""
    assert result.issue == "no FINDINGS or IMPRESSION section"
    assert not result.usable
    preamble = parse_sections(raw)[0]
    assert preamble.covers == (Section.PREAMBLE,)
    assert preamble.text.startswith("PA AND LATERAL CHEST RADIOGRAPHS The lungs are clear.")


def test_missing_section_issue_names_the_wanted_sections():
    assert (
        report_text(" FINDINGS: Lungs are clear bilaterally.\n", sections=("impression",)).issue
        == "no IMPRESSION section"
    )


@pytest.mark.parametrize("raw", ["", "   \n \n", "\n"])
def test_empty_report_is_flagged(raw):
    assert report_text(raw).issue == "empty report"


def test_too_short_report_keeps_its_text_and_says_how_short():
    result = report_text(" IMPRESSION:  No change.\n")
    assert result.text == "No change."
    assert result.issue == "too short (2 words)"
    assert report_text(" IMPRESSION:  No change.\n", min_words=2).usable
    assert DEFAULT_MIN_WORDS > 2


def test_empty_wanted_sections_count_as_zero_words():
    assert report_text(" FINDINGS: \n \n IMPRESSION: \n").issue == "too short (0 words)"


def test_structured_subheadings_stay_inside_findings():
    raw = (
        " FINDINGS: \n LUNGS: Clear.\n HEART: Normal size.\n Pleura: No effusion.\n"
        " IMPRESSION:  Normal chest radiograph.\n"
    )
    sections = parse_sections(raw)
    assert [section.header for section in sections] == ["FINDINGS", "IMPRESSION"]
    assert sections[0].text == "LUNGS: Clear. HEART: Normal size. Pleura: No effusion."


def test_times_and_blanks_in_text_are_not_headers():
    raw = (
        " IMPRESSION: \n Small left apical pneumothorax.\n \n"
        " NOTIFICATION:  Dr. ___ was paged at 10:15 on ___ and the\n"
        " findings were discussed.  Note: reviewed by ___.\n"
    )
    sections = parse_sections(raw)
    assert [section.covers for section in sections] == [(Section.IMPRESSION,), (Section.NOTIFICATION,)]
    assert sections[1].text == (
        "Dr. ___ was paged at 10:15 on ___ and the findings were discussed. Note: reviewed by ___."
    )


def test_separator_lines_and_addendum_are_split_off():
    raw = (
        " IMPRESSION:  No acute process.  Lines in standard position.\n"
        " ______________________________________________________________________________\n"
        " ADDENDUM:  The report was amended.\n"
    )
    sections = parse_sections(raw)
    assert [section.covers for section in sections] == [(Section.IMPRESSION,), (Section.ADDENDUM,)]
    assert report_text(raw).text == "No acute process. Lines in standard position."


def test_header_run_into_the_previous_sentence_is_still_found():
    raw = " FINDINGS:  The lungs are clear.  No pleural effusion. IMPRESSION: Normal chest radiograph.\n"
    sections = parse_sections(raw)
    assert [section.text for section in sections] == [
        "The lungs are clear. No pleural effusion.", "Normal chest radiograph.",
    ]


@pytest.mark.parametrize(
    "header, section",
    [("RECOMMENDATION(S)", Section.RECOMMENDATION), ("RECOMMENDATIONS", Section.RECOMMENDATION),
     ("NOTIFICATION", Section.NOTIFICATION), ("HISTORY", Section.HISTORY), ("CLINICAL HISTORY", Section.HISTORY),
     ("REASON FOR EXAMINATION", Section.INDICATION),
     ("WET READ", Section.WET_READ), ("COMPARISONS", Section.COMPARISON), ("EXAM", Section.EXAMINATION)],
)
def test_other_headers_map_to_their_sections(header, section):
    sections = parse_sections(f" {header}:  some text here\n FINDINGS:  Lungs clear.\n")
    assert sections[0].covers == (section,)
    assert sections[0].text == "some text here"


def test_repeated_impressions_are_all_kept_in_order():
    raw = " IMPRESSION:  First impression.\n FINDINGS:  Lungs clear.\n IMPRESSION:  Second impression.\n"
    assert report_text(raw).text == "First impression. Second impression. Lungs clear."


def test_unknown_section_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown report section 'impresion'"):
        parse_section_names(["impresion"])
    with pytest.raises(ValueError, match="no report sections"):
        report_text(MODERN, sections=())
