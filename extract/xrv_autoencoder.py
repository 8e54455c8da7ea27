"""torchxrayvision's chest-X-ray autoencoders as frozen image backbones (the paper's ResNet-AE).

The architecture is torchxrayvision's own (`xrv.autoencoders`, by the class its weights table
names); the weights are its published state dict, read from `--weights FILE` or from the file
torchxrayvision itself would use (`xrv.utils.get_cache_dir()` + the basename of its weights
URL). Nothing is downloaded. torchxrayvision is imported only when such a backbone is used: it
imports pandas and scikit-image at import time (about 5 s).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from adaptor_vlp.extract.backbone_spec import BackboneSpec, SpecError
from adaptor_vlp.extract.local_files import IncompatibleWeights


@dataclass(frozen=True)
class XrvWeightsLocation:
    """Where torchxrayvision keeps a weights file (`path`) and the URL it names for it (`url`)."""

    path: Path
    url: str


def xrv_weights_location(weights_name: str) -> XrvWeightsLocation:
    """Where torchxrayvision keeps the weights called `weights_name`, and the URL it names for them."""
    url = _weights_entry(weights_name)["weights_url"]
    return XrvWeightsLocation(Path(_torchxrayvision().utils.get_cache_dir()).expanduser() / os.path.basename(url), url)


class AutoencoderTower(torch.nn.Module):
    """The encoder half of a torchxrayvision autoencoder.

    pooled = the code `encode(x)` (B, 512, 3, 3) averaged over its 3 x 3 positions (the published
    code's feature); tokens = those 9 positions, row-major.
    """

    def __init__(self, autoencoder: torch.nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.autoencoder.encode(pixels, check_resolution=False)
        return code.mean(dim=(2, 3)), code.flatten(2).transpose(1, 2)

    def forward_with_maps(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(pooled, tokens) as `forward`, and the four maps the published U-Net reads as skip connections.

        The published ResNetAEUNet (models/seg_models.py:49-53) cuts the encoder at the same layers
        `encode` runs: block1 = conv1, bn1, relu (1/2 of the input); block2 = maxpool, layer1 (1/4);
        block3 = layer2 (1/8); block4 = layer3 (1/16); layer4's output is the code.
        """
        net = self.autoencoder
        block1 = net.relu(net.bn1(net.conv1(pixels)))
        block2 = net.layer1(net.maxpool(block1))
        block3 = net.layer2(block2)
        block4 = net.layer3(block3)
        code = net.layer4(block4)
        return code.mean(dim=(2, 3)), code.flatten(2).transpose(1, 2), [block1, block2, block3, block4]


def build_autoencoder(spec: BackboneSpec, checkpoint: Path | None) -> AutoencoderTower:
    """The spec's autoencoder with the state dict in `checkpoint` (None: seeded random weights)."""
    entry = _weights_entry(spec.model_id)
    if spec.image_size not in published_sizes(entry["resolution"]):
        raise IncompatibleWeights(f"backbone {spec.name!r} feeds {spec.image_size} px images; torchxrayvision's "
                                  f"{spec.model_id!r} weights are for {entry['resolution']} px (the published U-Net "
                                  f"also ran them at {', '.join(map(str, published_sizes(entry['resolution'])[1:]))})")
    architecture = getattr(_torchxrayvision().autoencoders, entry["class"])
    if checkpoint is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.random_init_seed)
            return AutoencoderTower(architecture())
    network = architecture()
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except (OSError, RuntimeError, ValueError, TypeError, AttributeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise IncompatibleWeights(f"{checkpoint} does not load into torchxrayvision's {entry['class']}: "
                                  f"{first_line}") from error
    return AutoencoderTower(network)


def published_sizes(resolution: int) -> tuple[int, ...]:
    """The input sides the weights run at: their own, and the published U-Net's larger crops of it.

    models/seg_models.py ResNetAEUNet (lines 60-73) accepts 224 x 2^k px and runs the encoder's blocks
    directly, bypassing torchxrayvision's resolution check; shell/segment-siim.sh crops SIIM at 896.
    """
    return tuple(resolution * 2 ** k for k in range(3))


def _weights_entry(weights_name: str) -> dict:
    table = _torchxrayvision().autoencoders.model_urls
    if weights_name not in table:
        raise SpecError(f"torchxrayvision has no autoencoder weights {weights_name!r}; it has {', '.join(table)}")
    return table[weights_name]


def _torchxrayvision() -> ModuleType:
    import torchxrayvision  # deferred: see the module docstring

    return torchxrayvision
