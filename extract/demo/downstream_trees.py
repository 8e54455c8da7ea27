"""The demo downstream trees by dataset layout: which writer makes each, its default and smallest size."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Protocol

from adaptor_vlp.extract.demo import covidx_tree, rsna_tree, siim_tree


class DemoTree(str, Enum):
    """Downstream layouts the demo can write, named as `adaptor extract manifest --dataset` reads them."""

    SIIM = "siim"
    RSNA = "rsna"
    COVIDX = "covidx"


class TreeSummary(Protocol):
    """What every demo tree writer returns: an account of what it wrote, one line per fact."""

    def lines(self) -> list[str]: ...


@dataclass(frozen=True)
class TreeWriter:
    """A demo tree's writer (`write(out, images=..., seed=...)`), its default image count and the smallest it allows."""

    write: Callable[..., TreeSummary]
    default_images: int
    min_images: int

    def __call__(self, out: Path, images: int | None = None, seed: int = 0) -> TreeSummary:
        return self.write(out, images=self.default_images if images is None else images, seed=seed)


DEMO_TREES: dict[DemoTree, TreeWriter] = {
    DemoTree.SIIM: TreeWriter(siim_tree.write_demo_siim, siim_tree.DEFAULT_IMAGES, siim_tree.MIN_IMAGES),
    DemoTree.RSNA: TreeWriter(rsna_tree.write_demo_rsna, rsna_tree.DEFAULT_IMAGES, rsna_tree.MIN_IMAGES),
    DemoTree.COVIDX: TreeWriter(covidx_tree.write_demo_covidx, covidx_tree.DEFAULT_IMAGES, covidx_tree.MIN_IMAGES),
}
