"""Class names of the datasets, without building them (the app's class picker, reports)."""

from __future__ import annotations

from ..core.config import DataConfig
from .emoji import EMOJI_GROUPS, fluent_class_names

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def class_names(cfg: DataConfig) -> list[str] | None:
    """The names of the dataset's classes in label order, without building it; None for image folders (their
    sub-folders name them)."""
    if cfg.dataset == "fashion-mnist":
        return list(FASHION_MNIST_CLASSES)
    if cfg.dataset in ("fluent", "fluent-people"):
        return fluent_class_names(cfg.labels)
    if cfg.dataset == "emoji":
        return [name for _, name in EMOJI_GROUPS]
    return None
