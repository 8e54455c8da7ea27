"""What one extraction run does, as a small picklable value that every shard task receives."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaptor_vlp.cache_schema import Modality, store_path
from adaptor_vlp.extract.backbones import BackboneSpec, get_spec
from adaptor_vlp.extract.precision import Precision


@dataclass(frozen=True)
class ExtractionJob:
    """One (dataset, modality, backbone) extraction: the store to fill and how to fill it.

    `registry` are the user's registry files (`--registry`), `max_length` caps a text
    backbone's tokens (`--max-length`), `verbose` lets the backbone libraries print their load
    reports and progress bars.
    """

    cache_dir: Path
    dataset: str
    modality: Modality
    backbone: str
    weights: Path | None = None
    tokens: bool = False
    views: int = 0
    batch_size: int = 32
    num_workers: int = 0
    device: str = "cpu"
    precision: Precision = Precision.AUTO
    shard_rows: int | None = None
    image_root: Path | None = None
    registry: tuple[Path, ...] = ()
    max_length: int | None = None
    verbose: bool = False

    @property
    def spec(self) -> BackboneSpec:
        """The backbone to run, resolved from the registries (or an ad-hoc name) for this job's modality."""
        return get_spec(self.backbone, self.registry, self.modality, self.max_length)

    @property
    def store(self) -> Path:
        return store_path(self.cache_dir, self.dataset, self.modality, self.backbone)
