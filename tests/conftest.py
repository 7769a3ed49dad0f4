import os

import pytest
import torch

os.environ.setdefault("WORKBENCH_FAST", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core (pytest-xdist): each worker and
    # the processes its tests start (distributed runs, notebooks, the app) use one thread, so that the workers
    # together never ask for more threads than there are cores (OpenMP's barriers turn oversubscription into ~50x)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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
