"""Draw radiopaque support devices (tubes, catheters, a pacemaker) as near-white shapes on a frontal view."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from adaptor_vlp.extract.demo.anatomy import Anatomy
from adaptor_vlp.extract.demo.findings import Device

Point = tuple[float, float]


def device_layer(devices: Sequence[Device], anatomy: Anatomy, side: int) -> np.ndarray:
    """A float map in [0, 1]: 1 where a device is drawn, 0 elsewhere."""
    layer = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    for device in devices:
        for points, width in _device_paths(device, anatomy):
            pixels = [(x * side, y * side) for x, y in points]
            draw.line(pixels, fill=255, width=max(2, round(width * side)), joint="curve")
        if device is Device.PACEMAKER:
            box_x, box_y = _pacemaker_box(anatomy)
            draw.rounded_rectangle(
                [(box_x - 0.045) * side, (box_y - 0.03) * side, (box_x + 0.045) * side, (box_y + 0.03) * side],
                radius=0.012 * side,
                fill=255,
            )
    return np.asarray(layer, dtype=np.float32) / 255.0


def _pacemaker_box(anatomy: Anatomy) -> Point:
    return anatomy.midline + 0.28, anatomy.apex + 0.06


def _device_paths(device: Device, anatomy: Anatomy) -> list[tuple[list[Point], float]]:
    """Polylines (in fractions of the image side) and their widths for one device."""
    mid, apex, diaphragm = anatomy.midline, anatomy.apex, anatomy.diaphragm
    if device is Device.ENDOTRACHEAL_TUBE:
        return [([(mid + 0.004, 0.0), (mid + 0.004, apex + 0.17)], 0.013)]
    if device is Device.ENTERIC_TUBE:
        down_the_oesophagus = [(mid - 0.012, 0.0), (mid - 0.012, diaphragm - 0.02)]
        return [(down_the_oesophagus + [(mid + 0.06, diaphragm + 0.08), (mid + 0.16, diaphragm + 0.1)], 0.008)]
    if device is Device.CENTRAL_LINE:
        subclavian = [(mid - 0.34, apex + 0.0), (mid - 0.13, apex + 0.07)]
        return [(subclavian + [(mid - 0.045, apex + 0.14), (mid - 0.035, apex + 0.24)], 0.008)]
    box_x, box_y = _pacemaker_box(anatomy)
    return [
        ([(box_x, box_y), (mid + 0.12, apex + 0.09), (mid - 0.01, apex + 0.22), (mid - 0.03, diaphragm - 0.17)], 0.006),
        ([(box_x, box_y), (mid + 0.1, apex + 0.1), (mid + 0.0, apex + 0.25), (mid + 0.07, diaphragm - 0.06)], 0.006),
    ]
