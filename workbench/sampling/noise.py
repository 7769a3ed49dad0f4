"""Where a sampling run's randomness comes from: per-image seeds.

In the default layout (sample.noise_layout = "per-image") image i of seed s owns three CPU generators, seeded from
`image_seed(s, i)` (i counts from sample.first_image):
- image_seed(s, i): the initial noise of every block, in block order, then (stochastic samplers: DDPM, VP Euler) each
  step's fresh noise, as the block's steps draw it;
- image_seed(s, i) + CONTEXT_SEED: the noise of sample.context_noise, one draw per finished block;
- image_seed(s, i) + LABEL_SEED_OFFSET: the image's class label when labels are drawn from sample.class_counts
  (otherwise image i is class i mod num_classes).
So image i is the same at any batch size, in any request and on any device (noise is drawn on the CPU, then moved).
image_seed(s, 0) = s, so a batch of one draws exactly what the older "batch" layout drew; that layout (one generator
of seed s for the whole batch, seed + CONTEXT_SEED and seed + LABEL_SEED_OFFSET beside it) stays selectable to
reproduce runs and reports made before per-image seeds.

Several requests may share one batch (batched generation): a batch is then a list of `Rows`, each a run of
consecutive images of one seed, and every row draws from its own image's generators exactly as it would alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..core.config import SampleConfig

LABEL_SEED_OFFSET = 7919  # the label draw's generator: seed + this, apart from the noise's generator (seed)
CONTEXT_SEED = 104729  # sample.context_noise's generator: seed + this, apart from the blocks' initial noise
_MASK = (1 << 64) - 1


def image_seed(seed: int, index: int) -> int:
    """The seed of image `index` of `seed`: `seed` itself for image 0, else a splitmix64 hash of (seed, index) in
    [0, 2**63), so that nearby seeds and indices give unrelated streams."""
    if index == 0:
        return seed
    z = (seed * 0x9E3779B97F4A7C15 + index * 0xD1B54A32D192ED03) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) >> 1


@dataclass(frozen=True, eq=False)
class Rows:
    """Images first_image .. first_image + num_images - 1 of `seed`, as consecutive rows of a batch, with their
    class labels (num_images,) (None: drawn as a request of these images alone draws them, see default_labels)."""

    seed: int
    first_image: int
    num_images: int
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.first_image < 0:
            raise ValueError(
                f"rows: {self.num_images} images from image {self.first_image} of seed {self.seed}. Fix: give at "
                "least one image and a first image >= 0."
            )

    def request(self, request: SampleConfig) -> SampleConfig:
        """`request` for these images alone: what a run of them without the rest of the batch would be."""
        return replace(request, seed=self.seed, first_image=self.first_image, num_images=self.num_images)


def rows_of(request: SampleConfig, labels: torch.Tensor | None = None) -> tuple[Rows, ...]:
    """The rows of a request alone: one run, its seed's images first_image onwards."""
    return (Rows(request.seed, request.first_image, request.num_images, labels),)


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator(device="cpu").manual_seed(s) for s in seeds]


class Noise:
    """The CPU generators of one sampling request, in its noise layout (see the module docstring): of its own
    images, or of `rows` (several requests' images in one batch; per-image layout only)."""

    def __init__(self, request: SampleConfig, rows: tuple[Rows, ...] | None = None):
        self.per_image = request.noise_layout == "per-image"
        rows = rows or rows_of(request)
        if len(rows) > 1 and not self.per_image:
            raise ValueError(
                "rows: the batch noise layout draws a whole batch from one generator, so requests cannot share "
                "a batch. Fix: use noise_layout='per-image', or sample the requests one by one."
            )
        self.seeds = (
            [image_seed(r.seed, r.first_image + j) for r in rows for j in range(r.num_images)]
            if self.per_image
            else [rows[0].seed]
        )
        self.num_images = sum(r.num_images for r in rows)
        self.images = _generators(self.seeds)
        self.context = _generators([s + CONTEXT_SEED for s in self.seeds]) if request.context_noise > 0 else []

    def keep(self, index: list[int]) -> None:
        """Keep only the images at `index` (rows of the batch, in order): the others left it (per-image layout)."""
        self.seeds = [self.seeds[i] for i in index]
        self.images = [self.images[i] for i in index]
        self.context = [self.context[i] for i in index] if self.context else []
        self.num_images = len(index)

    def _normal(self, gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
        if not self.per_image:
            return torch.randn((self.num_images, *shape), generator=gens[0])  # (B, *shape)
        return torch.cat([torch.randn((1, *shape), generator=g) for g in gens])  # (B, *shape)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) standard normal noise on the CPU from the images' own generators."""
        return self._normal(self.images, shape)

    def context_normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) the context noise of one finished block, on the CPU."""
        return self._normal(self.context, shape)

    @property
    def scheduler_generator(self) -> torch.Generator | list[torch.Generator]:
        """What a diffusers scheduler's step takes: one generator per image (diffusers draws image j's noise from
        entry j), or the batch's one."""
        return self.images if self.per_image else self.images[0]


def default_labels(num_classes: int, request: SampleConfig) -> torch.Tensor | None:
    """(B,) CPU class labels for samples not given any (None for unconditional models): image i is class
    i mod num_classes, or, with sample.class_counts (the training set's images per class), drawn in those
    proportions, so that grids and FID see the classes as often as the data does (classes without images are never
    drawn). Per-image layout: image i's label comes from its own generator (the module docstring)."""
    if not num_classes:
        return None
    first, n = request.first_image, request.num_images
    if not request.class_counts:
        return (first + torch.arange(n)) % num_classes
    weights = torch.tensor(request.class_counts, dtype=torch.float64)
    if request.noise_layout == "batch":
        gen = torch.Generator(device="cpu").manual_seed(request.seed + LABEL_SEED_OFFSET)
        return torch.multinomial(weights, n, replacement=True, generator=gen)
    gens = _generators([image_seed(request.seed, first + j) + LABEL_SEED_OFFSET for j in range(n)])
    return torch.cat([torch.multinomial(weights, 1, replacement=True, generator=g) for g in gens])


__all__ = ["Noise", "Rows", "rows_of", "image_seed", "default_labels", "LABEL_SEED_OFFSET", "CONTEXT_SEED"]
