"""Paint findings onto a frontal radiograph's density map, prominently enough to be seen at a glance.

Densities are floats where 0 is air (black) and about 0.6 is soft tissue; each painter changes
the map in place inside the lung fields it concerns.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from adaptor_vlp.extract.demo.anatomy import Chest, smooth_noise
from adaptor_vlp.extract.demo.findings import AirspaceDisease, Certainty, Effusion, Pneumothorax, Severity, Side

_EFFUSION_DEPTH = {Severity.SMALL: 0.08, Severity.MODERATE: 0.15, Severity.LARGE: 0.24}
_COLLAPSE_SCALE = {Severity.SMALL: 0.88, Severity.MODERATE: 0.78, Severity.LARGE: 0.62}


def image_sides(side: Side) -> tuple[int, ...]:
    """The image sides (-1 left, +1 right) showing a patient side: the patient's right is the image's left."""
    return {Side.RIGHT: (-1,), Side.LEFT: (1,), Side.BOTH: (-1, 1)}[side]


def paint_effusion(density: np.ndarray, effusion: Effusion, chest: Chest) -> None:
    """Fluid filling the lung base up to a meniscus that climbs the lateral wall, hiding the costophrenic angle."""
    depth = _EFFUSION_DEPTH[effusion.severity]
    for image_side in image_sides(effusion.side):
        lung = chest.lungs[image_side]
        lateral = np.clip(chest.lateral_coordinate(image_side), 0.0, 1.2)
        meniscus = chest.anatomy.dome(image_side) - depth - 0.07 * lateral**2
        fluid = 0.12 + 0.5 * np.clip((chest.grid.y - meniscus) / 0.035, 0.0, 1.0)
        density[lung] = np.maximum(density[lung], fluid[lung])


def paint_pneumothorax(density: np.ndarray, pneumothorax: Pneumothorax, chest: Chest) -> None:
    """An apical-lateral rim of black air without lung markings, bounded by a thin white pleural line."""
    for image_side, radius in _collapsed_lung_radii(pneumothorax, chest):
        lung = chest.lungs[image_side]
        density[lung & (radius > 1.0)] = 0.04
        pleural_line = lung & (np.abs(radius - 1.0) < 0.018) & (chest.grid.y < chest.anatomy.diaphragm - 0.06)
        density[pleural_line] = 0.42


def pneumothorax_region(pneumothorax: Pneumothorax, chest: Chest) -> np.ndarray:
    """Where `paint_pneumothorax` puts pleural air, as a boolean map on the chest's grid: a segmentation mask."""
    region = np.zeros(chest.grid.x.shape, dtype=bool)
    for image_side, radius in _collapsed_lung_radii(pneumothorax, chest):
        region |= chest.lungs[image_side] & (radius > 1.0)
    return region


def _collapsed_lung_radii(pneumothorax: Pneumothorax, chest: Chest) -> Iterator[tuple[int, np.ndarray]]:
    """For each affected lung, every pixel's elliptical radius from the collapsed lung (1 on its outline)."""
    anatomy, grid = chest.anatomy, chest.grid
    scale = _COLLAPSE_SCALE[pneumothorax.severity]
    for image_side in image_sides(pneumothorax.side):
        width = anatomy.lung_half_width * scale
        height = (anatomy.diaphragm - anatomy.apex) * 0.5 * scale
        centre_x = anatomy.lung_centre(image_side) - image_side * (anatomy.lung_half_width - width) * 0.9
        centre_y = anatomy.diaphragm - height * 0.95
        yield image_side, np.sqrt(((grid.x - centre_x) / width) ** 2 + ((grid.y - centre_y) / height) ** 2)


def paint_edema(density: np.ndarray, certainty: Certainty, chest: Chest, rng: np.random.Generator) -> None:
    """Bilateral perihilar ("bat wing") haze, patchy and fading towards the periphery."""
    anatomy, grid = chest.anatomy, chest.grid
    strength = 0.3 if certainty is Certainty.POSSIBLE else 0.45
    patchiness = 0.75 + 0.25 * smooth_noise(rng, grid.side, 20)
    hilum_y = (anatomy.apex + anatomy.diaphragm) / 2 + 0.03
    for image_side in (-1, 1):
        lung = chest.lungs[image_side]
        hilum_x = anatomy.midline + image_side * (anatomy.mediastinum_half_width + 0.03)
        haze = np.exp(-(((grid.x - hilum_x) / 0.12) ** 2 + ((grid.y - hilum_y) / 0.17) ** 2))
        density[lung] += (strength * haze * patchiness)[lung]


def paint_airspace(density: np.ndarray, airspace: AirspaceDisease, chest: Chest, rng: np.random.Generator) -> None:
    """A dense, patchy lower-lobe opacity that wipes out the lung markings it covers."""
    texture = smooth_noise(rng, chest.grid.side, 28)
    for image_side, radius_squared in _opacity_radii_squared(airspace, chest):
        lung = chest.lungs[image_side]
        weight = np.clip(1.2 - radius_squared + 0.35 * texture, 0.0, 1.0)
        density[lung] = np.maximum(density[lung], (0.12 + 0.42 * weight)[lung])


def airspace_regions(airspace: AirspaceDisease, chest: Chest) -> list[np.ndarray]:
    """Where `paint_airspace` makes each affected lung dense (the opacity's core, inside the lung), one boolean map
    per affected lung on the chest's grid: what an annotator would box."""
    return [chest.lungs[image_side] & (radius_squared < 1.0)
            for image_side, radius_squared in _opacity_radii_squared(airspace, chest)]


def _opacity_radii_squared(airspace: AirspaceDisease, chest: Chest) -> Iterator[tuple[int, np.ndarray]]:
    """For each affected lung, every pixel's squared elliptical radius from the lower-lobe opacity's centre
    (1 on its rim)."""
    anatomy, grid = chest.anatomy, chest.grid
    for image_side in image_sides(airspace.side):
        centre_x = anatomy.lung_centre(image_side) + image_side * 0.15 * anatomy.lung_half_width
        centre_y = anatomy.diaphragm - 0.13
        yield image_side, (
            ((grid.x - centre_x) / (0.8 * anatomy.lung_half_width)) ** 2 + ((grid.y - centre_y) / 0.12) ** 2
        )


def paint_atelectasis(density: np.ndarray, certainty: Certainty, chest: Chest) -> None:
    """Two thin, slightly oblique bright bands above each hemidiaphragm."""
    strength = 0.22 if certainty is Certainty.POSSIBLE else 0.32
    for image_side in (-1, 1):
        lateral = chest.lateral_coordinate(image_side)
        for height in (0.05, 0.09):
            band_y = chest.anatomy.dome(image_side) - height - 0.02 * lateral
            band = chest.lungs[image_side] & (np.abs(chest.grid.y - band_y) < 0.008) & (np.abs(lateral) < 0.75)
            density[band] += strength
