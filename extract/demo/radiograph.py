"""Draw demo chest radiographs: frontal (PA/AP) and lateral views in which a study's findings are visible.

Images are built as density maps (0 air, ~0.6 soft tissue, ~0.75 bone, ~1 metal) at half
resolution, exposed to grey and upsampled (which softens edges as a radiograph's are), overlaid
with sharp full-resolution metal, given quantum noise, then JPEG-encoded like MIMIC-CXR-JPG.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from adaptor_vlp.extract.demo.anatomy import Anatomy, Chest, grid, lay_out, smooth_noise
from adaptor_vlp.extract.demo.devices import device_layer
from adaptor_vlp.extract.demo.findings import Device, StudyFindings
from adaptor_vlp.extract.demo.pathology import (
    paint_airspace,
    paint_atelectasis,
    paint_edema,
    paint_effusion,
    paint_pneumothorax,
)

IMAGE_SIDE = 512
"""Pixels per side of a written image."""
JPEG_QUALITY = 90
_PAINT_FACTOR = 2
"""Anatomy and findings are painted at 1/2 resolution and upsampled: smooth like a radiograph, 4x faster."""
_CARDIOMEGALY_SCALE = 1.5
_AP_MAGNIFICATION = 1.08


def draw_frontal(
    findings: StudyFindings, anatomy: Anatomy, rng: np.random.Generator, portable: bool, side: int = IMAGE_SIDE
) -> np.ndarray:
    """A frontal view (PA, or AP when `portable`) as a (side, side) uint8 array showing `findings`."""
    chest = lay_out(anatomy, side // _PAINT_FACTOR)
    density = np.full((chest.grid.side, chest.grid.side), 0.03, dtype=np.float32)
    _paint_body(density, chest)
    _paint_lungs(density, chest, rng)
    if findings.airspace is not None:
        paint_airspace(density, findings.airspace, chest, rng)
    if findings.edema is not None:
        paint_edema(density, findings.edema.certainty, chest, rng)
    if findings.atelectasis is not None:
        paint_atelectasis(density, findings.atelectasis.certainty, chest)
    if findings.effusion is not None:
        paint_effusion(density, findings.effusion, chest)
    if findings.pneumothorax is not None:
        paint_pneumothorax(density, findings.pneumothorax, chest)
    heart_scale = (_CARDIOMEGALY_SCALE if findings.cardiomegaly else 1.0) * (_AP_MAGNIFICATION if portable else 1.0)
    _paint_mediastinum(density, chest, heart_scale)
    _paint_bones(density, chest)
    density += 0.2 * _clavicle_layer(anatomy, portable, chest.grid.side)
    devices = 0.97 * device_layer(findings.devices, anatomy, side) if findings.devices else None
    return _expose(density, anatomy.brightness, rng, side, devices)


def draw_lateral(
    findings: StudyFindings, anatomy: Anatomy, rng: np.random.Generator, side: int = IMAGE_SIDE
) -> np.ndarray:
    """A lateral view (anterior to the image's left): one lung field, heart in front, spine behind."""
    coordinates = grid(side // _PAINT_FACTOR)
    x, y = coordinates.x, coordinates.y
    density = np.full(x.shape, 0.03, dtype=np.float32)
    body = ((x - 0.5) / 0.44) ** 2 + ((y - 0.62) / 0.62) ** 2 < 1.0
    density[body] = 0.42
    dome = anatomy.diaphragm + 0.02 + 0.06 * (x - 0.5) / 0.3
    density[body & (y > dome)] = 0.52
    lung = (((x - 0.53) / 0.3) ** 2 + ((y - 0.45) / 0.36) ** 2 < 1.0) & (y < dome)
    density[lung] = (0.15 + 0.03 * smooth_noise(rng, coordinates.side, 32))[lung]
    if findings.effusion is not None:
        meniscus = dome - 0.12 + 0.15 * (0.75 - x)
        density[lung & (y > meniscus)] = 0.55
    if findings.airspace is not None:
        density[lung & (((x - 0.6) / 0.12) ** 2 + ((y - anatomy.diaphragm + 0.12) / 0.08) ** 2 < 1.0)] = 0.5
    heart_scale = _CARDIOMEGALY_SCALE if findings.cardiomegaly else 1.0
    heart = ((x - 0.36) / (0.12 * heart_scale)) ** 2 + ((y - anatomy.diaphragm + 0.1) / (0.12 * heart_scale**0.5)) ** 2
    density[(heart < 1.0) & (x > 0.1)] = 0.5
    spine = (x > 0.72) & (x < 0.8) & (y > 0.05)
    density[spine] = np.where((y[spine] * 22.0) % 1.0 < 0.18, 0.45, 0.66)
    density[body & (np.abs(x - 0.12 - 0.05 * y) < 0.012)] += 0.12
    trachea = body & (np.abs(x - 0.5 - 0.1 * y) < 0.012) & (y < anatomy.apex + 0.2)
    density[trachea] = 0.22
    if Device.ENDOTRACHEAL_TUBE in findings.devices:
        density[trachea & (np.abs(x - 0.5 - 0.1 * y) < 0.005)] = 0.97
    return _expose(density, anatomy.brightness, rng, side, None)


def encode_jpeg(pixels: np.ndarray) -> bytes:
    """Greyscale JPEG bytes, as MIMIC-CXR-JPG stores its images."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _paint_body(density: np.ndarray, chest: Chest) -> None:
    anatomy, x, y = chest.anatomy, chest.grid.x, chest.grid.y
    trunk = ((x - anatomy.midline) / 0.47) ** 2 + ((y - 0.78) / 0.8) ** 2
    body = trunk < 1.0
    density[body] = (0.3 + 0.12 * np.sqrt(1.0 - trunk[body]))
    below_domes = np.where(
        x < anatomy.midline,
        y > anatomy.dome(-1) + 0.09 * np.minimum(chest.lateral_coordinate(-1) ** 2, 1.0),
        y > anatomy.dome(1) + 0.09 * np.minimum(chest.lateral_coordinate(1) ** 2, 1.0),
    )
    density[body & below_domes] = 0.52
    bubble = ((x - anatomy.midline - 0.16) / 0.05) ** 2 + ((y - anatomy.dome(1) - 0.07) / 0.028) ** 2 < 1.0
    density[bubble] = 0.22


def _paint_lungs(density: np.ndarray, chest: Chest, rng: np.random.Generator) -> None:
    """Dark lung fields with vascular markings that branch out from the hila and fade to the periphery."""
    anatomy, x, y = chest.anatomy, chest.grid.x, chest.grid.y
    markings = smooth_noise(rng, chest.grid.side, 48)
    hilum_y = (anatomy.apex + anatomy.diaphragm) / 2 + 0.03
    for image_side, lung in chest.lungs.items():
        hilum_x = anatomy.midline + image_side * (anatomy.mediastinum_half_width + 0.02)
        distance = np.sqrt((x - hilum_x) ** 2 + (y - hilum_y) ** 2)
        vessels = 0.12 * np.exp(-distance / 0.09) * (1.0 + 0.6 * np.abs(markings))
        density[lung] = (0.1 + 0.035 * markings + vessels)[lung]


def _paint_mediastinum(density: np.ndarray, chest: Chest, heart_scale: float) -> None:
    """The mediastinum, heart and aortic knob in soft-tissue white, with the dark tracheal air column."""
    anatomy, x, y = chest.anatomy, chest.grid.x, chest.grid.y
    height = np.clip((y - anatomy.apex) / (anatomy.diaphragm - anatomy.apex), 0.0, 1.0)
    half_width = anatomy.mediastinum_half_width * (0.75 + 0.25 * height)
    density[(np.abs(x - anatomy.midline) < half_width) & (y < anatomy.diaphragm + 0.03)] = 0.52
    heart_width = anatomy.heart_half_width * heart_scale
    heart_height = anatomy.heart_half_height * heart_scale**0.4
    heart_x = anatomy.midline + 0.4 * heart_width
    heart_y = anatomy.diaphragm - 0.55 * heart_height
    heart = ((x - heart_x) / heart_width) ** 2 + ((y - heart_y) / heart_height) ** 2
    inside = heart < 1.0
    density[inside] = np.maximum(density[inside], 0.5 + 0.08 * np.sqrt(1.0 - heart[inside]))
    knob_x = anatomy.midline + anatomy.mediastinum_half_width * 0.9
    density[((x - knob_x) ** 2 + (y - anatomy.apex - 0.16) ** 2) < 0.03**2] = 0.57
    density[(np.abs(x - anatomy.midline) < 0.011) & (y < anatomy.apex + 0.18)] -= 0.2


def _paint_bones(density: np.ndarray, chest: Chest) -> None:
    """Posterior ribs arching across each lung, and the spine."""
    anatomy, x, y = chest.anatomy, chest.grid.x, chest.grid.y
    for image_side in (-1, 1):
        lateral = chest.lateral_coordinate(image_side)
        phase = (y - anatomy.apex + 0.03 - 0.06 * ((lateral + 1.0) / 2.0) ** 2) / anatomy.rib_spacing
        ribs = ((phase % 1.0) < 0.3) & (phase >= 0.0) & (phase < 10.0) & (lateral > -1.05) & (lateral < 1.15)
        density[ribs] += 0.085
    spine = np.abs(x - anatomy.midline) < 0.032
    density[spine] += np.where((y[spine] / 0.045) % 1.0 < 0.15, 0.0, 0.06)


def _clavicle_layer(anatomy: Anatomy, portable: bool, side: int) -> np.ndarray:
    """Both clavicles as a [0, 1] map; on a bedside AP film they project higher and flatter."""
    layer = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    for image_side in (-1, 1):
        start = (anatomy.midline + image_side * 0.035, anatomy.apex + 0.05)
        end = (anatomy.midline + image_side * 0.3, anatomy.apex - (0.0 if portable else 0.05))
        pixels = [(start[0] * side, start[1] * side), (end[0] * side, end[1] * side)]
        draw.line(pixels, fill=255, width=round(0.026 * side))
    return np.asarray(layer, dtype=np.float32) / 255.0


def _expose(
    density: np.ndarray, brightness: float, rng: np.random.Generator, side: int, overlay: np.ndarray | None
) -> np.ndarray:
    """Density to grey, upsampled to `side`, with any full-resolution overlay (metal) and quantum noise."""
    grey = np.clip(density * (brightness * 1.25), 0.0, 1.0) ** 0.85
    grey = np.asarray(Image.fromarray(grey).resize((side, side), Image.Resampling.BICUBIC))
    if overlay is not None:
        grey = np.maximum(grey, overlay)
    noisy = grey * 255.0 + rng.standard_normal(grey.shape, dtype=np.float32) * 4.0
    return np.clip(noisy, 0.0, 255.0).astype(np.uint8)
