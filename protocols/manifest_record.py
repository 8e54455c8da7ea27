"""What a manifest records about the protocol that split it, in its JSON options under `protocol`.

`adaptor extract manifest --protocol` writes it; the evaluate stage reads it back, to check that a head's
protocol task was split the manifest's way and to take the training subsets the protocol drew at manifest time
(published: pandas or NumPy draws on MGCA's frames, which only the reader's tables can replay).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from adaptor_vlp.protocols.records import ProtocolError, SplitSpec

MANIFEST_OPTION = "protocol"
"""The key of a manifest's options holding its `ProtocolRecord`."""


@dataclass(frozen=True)
class ProtocolRecord:
    """The protocol and split a manifest was written by, the subsets drawn, and counts sizing the faults.

    `subsets` maps a task name to its subsets (training percentage -> manifest ids); a task or percentage
    absent from it draws per run seed, or (100%) takes the whole training split.
    """

    name: str
    source: str
    dataset: str
    """The dataset layout the protocol's tasks name (rsna, siim, covidx)."""
    tasks: tuple[str, ...]
    """The protocol's tasks this manifest's split serves."""
    split: Mapping[str, Any]
    subsets: Mapping[str, Mapping[float, tuple[str, ...]]] = field(default_factory=dict)
    measured: Mapping[str, Any] = field(default_factory=dict)

    def split_matches(self, spec: SplitSpec) -> bool:
        return dict(self.split) == spec.to_json()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "dataset": self.dataset, "tasks": list(self.tasks),
                "split": dict(self.split),
                "subsets": {task: {f"{pct:g}": list(ids) for pct, ids in sorted(drawn.items())}
                            for task, drawn in sorted(self.subsets.items())},
                "measured": dict(self.measured)}

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> "ProtocolRecord | None":
        """The record in a manifest's options, or None when the manifest was written without a protocol."""
        raw = options.get(MANIFEST_OPTION)
        if raw is None:
            return None
        try:
            subsets = {str(task): {float(pct): tuple(str(i) for i in ids) for pct, ids in drawn.items()}
                       for task, drawn in raw.get("subsets", {}).items()}
            return cls(str(raw["name"]), str(raw["source"]), str(raw["dataset"]), tuple(map(str, raw["tasks"])),
                       dict(raw["split"]), subsets, dict(raw.get("measured", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ProtocolError(f"{where}: options.{MANIFEST_OPTION} cannot be read ({error!r}); rewrite the "
                                "manifest with `adaptor extract manifest --protocol`") from None
