import os

import pytest
import torch

os.environ.setdefault("WORKBENCH_FAST", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_head(model, std: float = 0.02) -> None:
    """The output head (and adaLN's modulation) start at zero (DiT init), which would make every property test
    vacuous: give them small random weights."""
    g = torch.Generator().manual_seed(1)
    zero_init = list(model.head.parameters())
    for layer in model.layers:
        for tower in layer.towers:
            if tower.ada is not None:
                zero_init += list(tower.ada.parameters())
    with torch.no_grad():
        for p in dict.fromkeys(zero_init):  # shared towers: each parameter once
            p.copy_(torch.randn(p.shape, generator=g) * std)
