"""Demo reports in MIMIC-CXR style and the CheXpert labels they imply.

A report is built from statements; each statement carries the CheXpert labels its sentence asserts
(1.0 stated, 0.0 negated, -1.0 hedged), so the labels of a written report are exactly those of the
sentences that appear in it, as a report labeller would read them.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Sequence

import numpy as np

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS
from adaptor_vlp.extract.demo.findings import (
    AirspaceAppearance,
    AirspaceDisease,
    Certainty,
    Device,
    Effusion,
    Side,
    StudyFindings,
)

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0


class ReportForm(str, Enum):
    """How a study's report file is written."""

    FULL = "full"
    IMPRESSION_ONLY = "impression only"
    EMPTY = "empty"
    MISSING = "missing"


@dataclass(frozen=True)
class Statement:
    """One sentence and the labels it asserts."""

    sentence: str
    labels: Mapping[str, float]


@dataclass(frozen=True)
class StudyContext:
    """What a report says about the study besides its findings."""

    examination: str
    technique: str
    has_prior: bool


@dataclass(frozen=True)
class DemoReport:
    """A report's text and the CheXpert labels its FINDINGS and IMPRESSION imply."""

    text: str
    labels: Mapping[str, float | None]


def write_report(
    findings: StudyFindings, context: StudyContext, form: ReportForm, rng: np.random.Generator
) -> DemoReport:
    """The report file's text for a study written in `form` (empty text for EMPTY and MISSING)."""
    if form in (ReportForm.EMPTY, ReportForm.MISSING):
        return DemoReport("", chexpert_labels(()))
    impression = impression_statements(findings, rng)
    if form is ReportForm.IMPRESSION_ONLY:
        return DemoReport(_layout([("IMPRESSION", impression)], inline=True), chexpert_labels(impression))
    body = findings_statements(findings, rng)
    sections = [
        ("EXAMINATION", [_plain(context.examination)]),
        ("INDICATION", [_plain(_pick(rng, _INDICATIONS))]),
        ("TECHNIQUE", [_plain(context.technique)]),
        ("COMPARISON", [_plain(_pick(rng, _COMPARISONS) if context.has_prior else "None.")]),
        ("FINDINGS", body),
        ("IMPRESSION", impression),
    ]
    if rng.random() < 0.3:
        sections = [section for section in sections if section[0] != "TECHNIQUE"]
    return DemoReport(_layout(sections, inline=bool(rng.random() < 0.3)), chexpert_labels(body + impression))


def chexpert_labels(statements: Sequence[Statement]) -> dict[str, float | None]:
    """The 14 labels the statements assert; "No Finding" is 1.0 when no pathology is stated or hedged."""
    labels: dict[str, float | None] = {name: None for name in CHEXPERT_LABELS}
    for statement in statements:
        for name, value in statement.labels.items():
            if labels[name] not in (None, value):
                raise ValueError(f"demo report contradicts itself on {name}: {statement.sentence!r}")
            labels[name] = value
    pathology = [name for name in CHEXPERT_LABELS if name not in ("No Finding", "Support Devices")]
    if not any(labels[name] in (POSITIVE, UNCERTAIN) for name in pathology):
        labels["No Finding"] = POSITIVE
    return labels


def findings_statements(findings: StudyFindings, rng: np.random.Generator) -> list[Statement]:
    """The FINDINGS section: every finding drawn, plus explicit negations of the main absent ones."""
    statements = [_say(rng, _DEVICE_SENTENCES[device], {"Support Devices": POSITIVE}) for device in findings.devices]
    if findings.airspace is not None:
        statements.append(_airspace_statement(findings.airspace, rng))
    elif rng.random() < 0.8:
        options = ("No focal consolidation.", "There is no focal consolidation.")
        statements.append(_say(rng, options, {"Consolidation": NEGATIVE}))
    if findings.edema is not None:
        statements.append(_edema_statement(findings.edema.certainty, rng))
    elif rng.random() < 0.6:
        statements.append(_say(rng, ("No pulmonary edema.", "There is no pulmonary edema."), {"Edema": NEGATIVE}))
    if findings.atelectasis is not None:
        statements.append(_atelectasis_statement(findings.atelectasis.certainty))
    statements.extend(_pleural_statements(findings, rng))
    statements.append(_heart_statement(findings.cardiomegaly, rng))
    if rng.random() < 0.3:
        statements.append(Statement("No displaced fracture is seen.", {"Fracture": NEGATIVE}))
    return statements


def impression_statements(findings: StudyFindings, rng: np.random.Generator) -> list[Statement]:
    """The IMPRESSION section: the findings in brief, or a normal study's one-liner."""
    if not findings.has_pathology:
        normal = _say(rng, ("No acute cardiopulmonary process.", "No acute intrathoracic process."), {})
        if findings.devices:
            return [Statement("Support devices are in standard position.", {"Support Devices": POSITIVE}), normal]
        return [normal]
    statements = []
    if findings.pneumothorax is not None:
        side = _cap(findings.pneumothorax.side.value)
        statements.append(Statement(f"{side} pneumothorax.", {"Pneumothorax": POSITIVE}))
    if findings.airspace is not None:
        statements.extend(_airspace_impression(findings.airspace))
    if findings.edema is not None:
        statements.append(_edema_statement(findings.edema.certainty, rng))
    if findings.effusion is not None:
        statements.append(_effusion_statement(findings.effusion, rng))
    if findings.cardiomegaly:
        statements.append(_say(rng, ("Cardiomegaly.", "Enlarged heart."), {"Cardiomegaly": POSITIVE}))
    if findings.atelectasis is not None:
        statements.append(_atelectasis_statement(findings.atelectasis.certainty))
    if findings.devices:
        statements.append(Statement("Support devices as described.", {"Support Devices": POSITIVE}))
    return statements


_INDICATIONS = (
    "___-year-old man with shortness of breath, evaluate for pneumonia.",
    "___F with cough and fever // eval for pna",
    "___M with chest pain. Evaluate for acute process.",
    "___-year-old woman status post fall, evaluate for acute process.",
    "History: ___F with dyspnea",
    "___ with hypoxia // ? interval change",
    "Intubated patient, assess tube position.",
)
_COMPARISONS = ("___", "Chest radiograph from ___.", "Prior chest radiographs ___ and ___.")

_DEVICE_SENTENCES = {
    Device.ENDOTRACHEAL_TUBE: ("Endotracheal tube terminates approximately 4 cm above the carina.",
                               "The endotracheal tube tip is 5 cm above the carina."),
    Device.ENTERIC_TUBE: ("An enteric tube courses below the diaphragm with its tip in the stomach.",
                          "Nasogastric tube terminates in the stomach."),
    Device.CENTRAL_LINE: ("Right internal jugular central venous catheter terminates in the mid SVC.",
                          "A right-sided central venous catheter ends at the cavoatrial junction."),
    Device.PACEMAKER: ("Left chest wall pacemaker with leads terminating in the right atrium and right ventricle.",
                       "A left-sided pacemaker device is present with two leads in standard position."),
}


def _airspace_statement(airspace: AirspaceDisease, rng: np.random.Generator) -> Statement:
    side = airspace.side.value
    if airspace.appearance is AirspaceAppearance.CONSOLIDATION:
        options = (f"Dense consolidation in the {side} lower lobe.",
                   f"There is focal consolidation at the {side} lung base.")
        return _say(rng, options, {"Consolidation": POSITIVE})
    options = (f"Patchy opacity in the {side} lower lung.", f"There is a dense {side} basilar opacity.")
    return _say(rng, options, {"Lung Opacity": POSITIVE})


def _airspace_impression(airspace: AirspaceDisease) -> list[Statement]:
    label = "Consolidation" if airspace.appearance is AirspaceAppearance.CONSOLIDATION else "Lung Opacity"
    statements = [Statement(f"{_cap(airspace.side.value)} lower lobe {airspace.appearance.value}.", {label: POSITIVE})]
    if airspace.pneumonia is Certainty.DEFINITE:
        statements.append(Statement("Findings are consistent with pneumonia.", {"Pneumonia": POSITIVE}))
    elif airspace.pneumonia is Certainty.POSSIBLE:
        statements.append(Statement("Pneumonia cannot be excluded.", {"Pneumonia": UNCERTAIN}))
    return statements


def _edema_statement(certainty: Certainty, rng: np.random.Generator) -> Statement:
    if certainty is Certainty.POSSIBLE:
        return Statement("Mild perihilar haziness may represent mild pulmonary edema.", {"Edema": UNCERTAIN})
    options = ("Moderate pulmonary edema with perihilar haziness.",
               "Perihilar haziness and vascular indistinctness consistent with pulmonary edema.")
    return _say(rng, options, {"Edema": POSITIVE})


def _atelectasis_statement(certainty: Certainty) -> Statement:
    if certainty is Certainty.POSSIBLE:
        return Statement("Bibasilar linear densities likely reflect atelectasis.", {"Atelectasis": UNCERTAIN})
    return Statement("Linear bibasilar atelectasis.", {"Atelectasis": POSITIVE})


def _effusion_statement(effusion: Effusion, rng: np.random.Generator) -> Statement:
    side, size = effusion.side.value, effusion.severity.value
    both = effusion.side is Side.BOTH
    plural = "s" if both else ""
    if effusion.certainty is Certainty.POSSIBLE:
        options = (f"Possible small {side} pleural effusion{plural}.",
                   f"Blunting of the costophrenic angle{plural} may reflect small pleural effusion{plural}.")
        return _say(rng, options, {"Pleural Effusion": UNCERTAIN})
    options = (f"{_cap(size)} {side} pleural effusion{plural}.",
               f"There {'are' if both else 'is a'} {size} {side} pleural effusion{plural} "
               f"with blunting of the costophrenic angle{plural}.")
    return _say(rng, options, {"Pleural Effusion": POSITIVE})


def _pleural_statements(findings: StudyFindings, rng: np.random.Generator) -> list[Statement]:
    if findings.effusion is None and findings.pneumothorax is None:
        options = ("No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.")
        return [_say(rng, options, {"Pleural Effusion": NEGATIVE, "Pneumothorax": NEGATIVE})]
    statements = []
    if findings.effusion is not None:
        statements.append(_effusion_statement(findings.effusion, rng))
    else:
        statements.append(Statement("No pleural effusion.", {"Pleural Effusion": NEGATIVE}))
    if findings.pneumothorax is not None:
        size, side = findings.pneumothorax.severity.value, findings.pneumothorax.side.value
        sentence = f"{_cap(size)} {side} apical pneumothorax with a visible visceral pleural edge."
        statements.append(Statement(sentence, {"Pneumothorax": POSITIVE}))
    else:
        statements.append(Statement("No pneumothorax is seen.", {"Pneumothorax": NEGATIVE}))
    return statements


def _heart_statement(cardiomegaly: bool, rng: np.random.Generator) -> Statement:
    if cardiomegaly:
        options = ("The heart is enlarged.", "The cardiac silhouette is markedly enlarged.", "Moderate cardiomegaly.")
        return _say(rng, options, {"Cardiomegaly": POSITIVE})
    if rng.random() < 0.5:
        labels = {"Cardiomegaly": NEGATIVE, "Enlarged Cardiomediastinum": NEGATIVE}
        return Statement("The cardiomediastinal silhouette is normal.", labels)
    return _say(rng, ("Heart size is normal.", "The cardiac silhouette is normal in size."), {"Cardiomegaly": NEGATIVE})


def _say(rng: np.random.Generator, options: Sequence[str], labels: Mapping[str, float]) -> Statement:
    """One of `options`, chosen at random, asserting `labels`."""
    return Statement(_pick(rng, options), labels)


def _plain(sentence: str) -> Statement:
    return Statement(sentence, {})


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _layout(sections: Sequence[tuple[str, Sequence[Statement]]], inline: bool) -> str:
    """MIMIC's layout: a centred title, one-space-indented headers, lines wrapped at 77 columns.

    Short sections sit on their header's line; FINDINGS and IMPRESSION start on the header's line
    when `inline`, else after a blank line, as both styles occur in MIMIC-CXR.
    """
    lines = [" " * 33 + "FINAL REPORT"]
    for header, statements in sections:
        wrapped = textwrap.wrap("  ".join(statement.sentence for statement in statements), width=76)
        if inline or header not in ("FINDINGS", "IMPRESSION"):
            lines.append(f" {header}:  {wrapped[0]}")
            lines.extend(f" {line}" for line in wrapped[1:])
        else:
            lines.extend([f" {header}: ", " "])
            lines.extend(f" {line}" for line in wrapped)
        lines.append(" ")
    return "\n".join(lines[:-1]) + "\n"
