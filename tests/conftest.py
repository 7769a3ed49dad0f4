import os

import pytest
import torch

os.environ.setdefault("WORKBENCH_FAST", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_head(model, std: float = 0.02) -> None:
    """The output head starts at zero (DiT init), which would make every property test vacuous."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
