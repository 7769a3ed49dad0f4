"""Train the Fashion-MNIST classifier whose penultimate layer is the "fmnist-classifier" FID feature extractor.

    python scripts/train_feature_net.py            # ~7 min on 2 CPU cores, >= 90% test accuracy

Writes data/features/fmnist_classifier.safetensors (weights, no pickle) and fmnist_classifier.json (the card:
architecture, test accuracy, command, seed, sha256 of the weights). Images are served as the workbench serves
them: 28x28 zero-padded to 32x32, in [-1, 1]; training adds random horizontal flips.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from workbench.core.paths import sha256_file
from workbench.data.datasets import fashion_mnist_arrays
from workbench.evaluation.features import CLASSIFIER_WEIGHTS, FashionClassifier


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = fashion_mnist_arrays(split)  # (N, 28, 28) uint8, (N,) int64
    x = torch.from_numpy(np.pad(images, ((0, 0), (2, 2), (2, 2)))).float().unsqueeze(1) / 127.5 - 1  # (N, 1, 32, 32)
    return x, torch.from_numpy(labels)


@torch.no_grad()
def accuracy(model: FashionClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


def train(model: FashionClassifier, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> None:
    g = torch.Generator().manual_seed(args.seed)
    steps = args.epochs * (len(y) // args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(y), generator=g)
        for idx in order[: steps // args.epochs * args.batch_size].view(-1, args.batch_size):
            xb = x[idx]  # (B, 1, 32, 32)
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=16, help="channels of the first conv stage (then 2x, 4x)")
    p.add_argument("--features", type=int, default=128, help="size of the penultimate (feature) layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=CLASSIFIER_WEIGHTS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    start = time.time()
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    architecture = {"width": args.width, "num_features": args.features, "num_classes": 10}
    model = FashionClassifier(**architecture)
    train(model, x_train, y_train, args)
    test_acc, train_acc = accuracy(model, x_test, y_test), accuracy(model, x_train, y_train)
    seconds = time.time() - start
    print(f"test accuracy {test_acc:.4f}, train accuracy {train_acc:.4f}, {seconds:.0f} s")
    if test_acc < 0.9:
        sys.exit(f"test accuracy {test_acc:.4f} < 0.90: weights not written. Fix: train longer (--epochs).")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    card = {
        "name": "fmnist-classifier",
        "architecture": architecture,
        "model": "workbench.evaluation.features.FashionClassifier: "
        "conv-BN-ReLU 3x3 stages (w @32px, pool, 2w @16px, pool, "
        "4w @8px, pool) -> Linear(16*4w, num_features) -> ReLU [features] -> Dropout(0.3) -> Linear(10)",
        "parameters": sum(t.numel() for t in model.parameters()),
        "feature_layer": "model.body output: the penultimate layer, after its ReLU",
        "test_accuracy": round(test_acc, 4),
        "train_accuracy": round(train_acc, 4),
        "data": "Fashion-MNIST train (60000) to train, test (10000) to evaluate; 28x28 zero-padded to 32x32, "
        "[-1, 1]; random horizontal flips",
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "AdamW",
            "lr": args.lr,
            "schedule": "OneCycleLR",
            "weight_decay": args.weight_decay,
            "label_smoothing": 0.1,
        },
        "seed": args.seed,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "seconds": round(seconds),
        "threads": torch.get_num_threads(),
        "load_average": f"{os.getloadavg()[0]:.1f} (1-min, at the end): a shared machine trains slower",
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sha256": sha256_file(args.out),
    }
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out} (sha256 {card['sha256'][:12]}...) and {args.out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
