"""What a demo study shows: the findings drawn into its images and stated in its report.

Both the image painter and the report writer read the same `StudyFindings`, so the pictures, the
report and the CheXpert labels derived from the report always agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Side(str, Enum):
    """The patient's side (the patient's right is the image's left on a frontal view)."""

    RIGHT = "right"
    LEFT = "left"
    BOTH = "bilateral"


class Certainty(str, Enum):
    """How the report words a finding: stated plainly, or hedged (CheXpert's uncertain, -1.0)."""

    DEFINITE = "definite"
    POSSIBLE = "possible"


class Severity(str, Enum):
    """How large a finding is drawn and described."""

    SMALL = "small"
    MODERATE = "moderate"
    LARGE = "large"


class AirspaceAppearance(str, Enum):
    """Whether the report calls an airspace finding consolidation or (less specifically) opacity."""

    CONSOLIDATION = "consolidation"
    OPACITY = "opacity"


class Device(str, Enum):
    """Radiopaque support devices a study may show."""

    ENDOTRACHEAL_TUBE = "endotracheal tube"
    ENTERIC_TUBE = "enteric tube"
    CENTRAL_LINE = "central venous catheter"
    PACEMAKER = "pacemaker"


@dataclass(frozen=True)
class Effusion:
    """Pleural fluid at the lung base(s), blunting the costophrenic angle(s)."""

    side: Side
    severity: Severity
    certainty: Certainty


@dataclass(frozen=True)
class Pneumothorax:
    """Air in the pleural space at one apex: a lucent rim without lung markings behind a pleural line."""

    side: Side
    severity: Severity


@dataclass(frozen=True)
class Edema:
    """Bilateral perihilar haze."""

    certainty: Certainty


@dataclass(frozen=True)
class AirspaceDisease:
    """A dense lower-lobe opacity on one side, with or without the report calling it pneumonia."""

    side: Side
    appearance: AirspaceAppearance
    pneumonia: Certainty | None


@dataclass(frozen=True)
class Atelectasis:
    """Linear bibasilar densities."""

    certainty: Certainty


@dataclass(frozen=True)
class StudyFindings:
    """Everything a demo study shows; None / False / empty where the study is normal in that respect."""

    cardiomegaly: bool = False
    effusion: Effusion | None = None
    pneumothorax: Pneumothorax | None = None
    edema: Edema | None = None
    airspace: AirspaceDisease | None = None
    atelectasis: Atelectasis | None = None
    devices: tuple[Device, ...] = ()

    @property
    def has_pathology(self) -> bool:
        """True when anything but support devices is present (CheXpert's "No Finding" ignores devices)."""
        return self.cardiomegaly or any(
            finding is not None
            for finding in (self.effusion, self.pneumothorax, self.edema, self.airspace, self.atelectasis)
        )


@dataclass(frozen=True)
class PatientTraits:
    """Findings that persist across a patient's studies."""

    cardiomegaly: bool
    pacemaker: bool


def sample_traits(rng: np.random.Generator) -> PatientTraits:
    """A patient's lasting findings."""
    return PatientTraits(cardiomegaly=bool(rng.random() < 0.25), pacemaker=bool(rng.random() < 0.08))


def sample_findings(rng: np.random.Generator, traits: PatientTraits, portable: bool) -> StudyFindings:
    """One study's findings; portable (bedside) studies are sicker and carry more devices."""
    return StudyFindings(
        cardiomegaly=traits.cardiomegaly,
        effusion=_sample_effusion(rng, 0.3 if portable else 0.15),
        pneumothorax=_sample_pneumothorax(rng, 0.12 if portable else 0.06),
        edema=Edema(_certainty(rng, 0.3)) if rng.random() < (0.25 if portable else 0.08) else None,
        airspace=_sample_airspace(rng, 0.2 if portable else 0.15),
        atelectasis=Atelectasis(_certainty(rng, 0.5)) if rng.random() < 0.12 else None,
        devices=_sample_devices(rng, traits, portable),
    )


def _certainty(rng: np.random.Generator, possible_rate: float) -> Certainty:
    return Certainty.POSSIBLE if rng.random() < possible_rate else Certainty.DEFINITE


def _sample_effusion(rng: np.random.Generator, rate: float) -> Effusion | None:
    if rng.random() >= rate:
        return None
    side = (Side.RIGHT, Side.LEFT, Side.BOTH)[int(rng.integers(3))]
    certainty = _certainty(rng, 0.25)
    if certainty is Certainty.POSSIBLE:
        return Effusion(side, Severity.SMALL, certainty)
    return Effusion(side, (Severity.MODERATE, Severity.LARGE)[int(rng.integers(2))], certainty)


def _sample_pneumothorax(rng: np.random.Generator, rate: float) -> Pneumothorax | None:
    if rng.random() >= rate:
        return None
    side = (Side.RIGHT, Side.LEFT)[int(rng.integers(2))]
    return Pneumothorax(side, (Severity.MODERATE, Severity.LARGE)[int(rng.integers(2))])


def _sample_airspace(rng: np.random.Generator, rate: float) -> AirspaceDisease | None:
    if rng.random() >= rate:
        return None
    side = (Side.RIGHT, Side.LEFT)[int(rng.integers(2))]
    appearance = (AirspaceAppearance.CONSOLIDATION, AirspaceAppearance.OPACITY)[int(rng.integers(2))]
    pneumonia = (Certainty.DEFINITE, Certainty.POSSIBLE, None)[int(rng.integers(3))]
    return AirspaceDisease(side, appearance, pneumonia)


def _sample_devices(rng: np.random.Generator, traits: PatientTraits, portable: bool) -> tuple[Device, ...]:
    devices = []
    if portable and rng.random() < 0.35:
        devices.append(Device.ENDOTRACHEAL_TUBE)
        if rng.random() < 0.7:
            devices.append(Device.ENTERIC_TUBE)
    if rng.random() < (0.3 if portable else 0.05):
        devices.append(Device.CENTRAL_LINE)
    if traits.pacemaker:
        devices.append(Device.PACEMAKER)
    return tuple(devices)
