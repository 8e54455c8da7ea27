"""Decoding a batch of JPEGs with torchvision's `decode_jpeg` on the forward pass's device (`--decoder gpu`).

On CUDA this is nvJPEG: the entropy decoding that bounds a GPU node's reader at full resolution
(57 ms per radiograph per core) moves to the GPU. Its output differs from libjpeg-turbo's in the
last bits (IDCT and upsampling are other implementations), so a store records which decoder made
it (`decoder_record`) and is refused on resume by the other. Files that are not JPEGs (PNG,
DICOM), truncated JPEGs and JPEGs the device decoder refuses are decoded (or refused, with the
reason) as `--decoder cpu` decodes them; a reduced
decode size resizes the full decode (there is no DCT scaling here), keeping the full frame.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from adaptor_vlp.extract.images import DecodedImage, UnreadableImage, read_decoded, resize_shorter_side

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


class Decoder(str, Enum):
    """What decodes JPEGs."""

    CPU = "cpu"
    """Pillow (libjpeg-turbo) in the reader's worker processes or threads, at a reduced DCT scale where asked."""
    GPU = "gpu"
    """torchvision's decode_jpeg on the job's device, a batch at a time (nvJPEG on CUDA)."""


def decoder_record(decoder: Decoder, device: str) -> dict:
    """The preprocessing entry a store made by `decoder` records: none for the CPU (stores made before say none)."""
    if decoder is Decoder.CPU:
        return {}
    return {"decoder": f"torchvision.io.decode_jpeg on {torch.device(device).type}"}


def decode_batch(paths: Sequence[Path], target_size: int | None, device: str) -> list[DecodedImage | UnreadableImage]:
    """Each file as a uint8 grayscale image on the CPU (or the reason it has none), its JPEGs decoded on `device`."""
    results: list[DecodedImage | UnreadableImage | None] = [None] * len(paths)
    jpegs: dict[int, torch.Tensor] = {}
    for index, path in enumerate(paths):
        data = _read_bytes(path)
        if isinstance(data, torch.Tensor) and _whole_jpeg(data):
            jpegs[index] = data
        else:
            results[index] = data if isinstance(data, UnreadableImage) else _on_cpu(path, target_size)
    if jpegs:
        for index, gray in zip(jpegs, _decoded_jpegs(list(jpegs.values()), device)):
            if gray is None:
                results[index] = _on_cpu(paths[index], target_size)
                continue
            frame = (int(gray.shape[0]), int(gray.shape[1]))
            resized = gray if target_size is None else resize_shorter_side(gray, target_size)
            results[index] = DecodedImage(resized, frame)
    return results


def _decoded_jpegs(datas: list[torch.Tensor], device: str) -> list:
    """The batch's grayscale pixels as numpy arrays; where the batch fails, each JPEG alone (None: it fails alone)."""
    try:
        return [image[0].cpu().numpy() for image in decode_jpeg(datas, mode=ImageReadMode.GRAY, device=device)]
    except RuntimeError:
        if len(datas) == 1:
            return [None]
        return [gray for data in datas for gray in _decoded_jpegs([data], device)]


def _whole_jpeg(data: torch.Tensor) -> bool:
    """A JPEG from its start marker to its end marker: a truncated one goes to the CPU decoder, naming the fault."""
    return len(data) >= 4 and bytes(data[:2].tolist()) == JPEG_START and bytes(data[-2:].tolist()) == JPEG_END


def _read_bytes(path: Path) -> torch.Tensor | UnreadableImage:
    if not Path(path).is_file():
        return UnreadableImage(path, "file not found")
    return read_file(str(path))


def _on_cpu(path: Path, target_size: int | None) -> DecodedImage | UnreadableImage:
    try:
        return read_decoded(path, target_size)
    except UnreadableImage as error:
        return error
