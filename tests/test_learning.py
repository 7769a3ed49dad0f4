"""A real learning check: the `tiny` MADFormer memorises four Fashion-MNIST images and samples them back.

Threshold: if a and b are the two closest training images (pixel MSE d_min), the midpoint between them has MSE
d_min / 4 to each. A sample whose nearest training image is within d_min / 4 is therefore closer to that image
than any blend of two training images can be: it has reproduced one of them. We require this for most samples
(the median), and that every sample is far closer to the training set than the untrained model's samples are.
"""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.core.objectives import build_objective
from workbench.data.datasets import fashion_mnist_arrays


def four_images() -> torch.Tensor:
    x, y = fashion_mnist_arrays("train")
    idx = [int(np.flatnonzero(y == c)[0]) for c in (0, 1, 7, 8)]  # t-shirt, trouser, sneaker, bag
    imgs = torch.from_numpy(x[idx].astype(np.float32)) / 127.5 - 1
    return torch.nn.functional.pad(imgs, (2, 2, 2, 2), value=-1.0).unsqueeze(1)  # (4, 1, 32, 32)


def nearest_mse(samples: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    return ((samples[:, None] - refs[None]) ** 2).mean(dim=(2, 3, 4)).min(dim=1).values


OBJECTIVES = {  # (config overrides, sampler)
    "epsilon": ({}, "dpm++2m"),
    "v-min-snr": ({"diffusion.prediction": "v_prediction", "diffusion.loss_weighting": "min_snr"}, "dpm++2m"),
    "flow": ({"diffusion.prediction": "flow", "sample.sampler": "euler"}, "euler"),
    "flow-adaln": (
        {"diffusion.prediction": "flow", "sample.sampler": "euler", "model.timestep_conditioning": "adaln"},
        "dpm++2m",
    ),
}

# epsilon learns the four images slowest: at 500 steps its median distance sat at 0.89 of the bound on a CPU without
# AVX-512 and 1.14 of it on one with AVX-512 (other rounding, another trajectory); it gets more steps, same bound
TRAIN_STEPS = {"epsilon": 800}


@pytest.mark.slow
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_tiny_model_memorises_four_images(objective):
    torch.manual_seed(0)
    imgs = four_images()
    over, sampler = OBJECTIVES[objective]
    cfg = wb.preset("tiny", **over)
    model = wb.build_model(cfg)
    untrained = wb.generate(model, cfg, num_images=8, steps=50, sampler=sampler, seed=0).clamp(-1, 1)
    diffusion = build_objective(cfg.diffusion, cfg.model)
    steps = TRAIN_STEPS.get(objective, 500)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 25, max(0.05, 2 * (steps - s) / steps)))
    for _ in range(steps):
        loss = diffusion.loss(model, imgs.repeat(8, 1, 1, 1)).total
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    samples = wb.generate(model, cfg, num_images=8, steps=50, sampler=sampler, seed=0).clamp(-1, 1)
    pair = ((imgs[:, None] - imgs[None]) ** 2).mean(dim=(2, 3, 4))
    d_min = pair[~torch.eye(4, dtype=torch.bool)].min()
    got, before = nearest_mse(samples, imgs), nearest_mse(untrained, imgs)
    assert got.median() < d_min / 4, (got, d_min)
    assert got.max() < before.min() / 4, (got, before)
