"""Train a small CNN on 8x8 digit images with the Paceline worker runtime.

Data: scikit-learn's `load_digits` when scikit-learn is installed, otherwise a deterministic synthetic set of
8x8 digit glyphs (seeded shifts, stroke strength and noise) generated here; nothing is downloaded.

Two pods of two GPUs each, as the operator starts them (every address is loopback):

    export PYTHONPATH=worker-image PET_NNODES=2 PET_NPROC_PER_NODE=2 PET_MASTER_ADDR=127.0.0.1 \
        PET_MASTER_PORT=29500 PACELINE_METRICS_PORT=0 \
        PACELINE_ASSIGNMENT='{"version": 1, "batchSizes": [24, 40]}'
    for pod in 0 1; do
        PET_NODE_RANK=$pod python -m paceline_worker.launch -- python examples/train_digits.py &
    done; wait
"""

from __future__ import annotations

import argparse
import logging

import torch
from torch import nn
from torch.utils.data import TensorDataset

from paceline_worker import Worker

log = logging.getLogger("train_digits")

# 5x7 glyphs for the synthetic fallback, one string per row.
GLYPHS = {
    0: [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    1: ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    2: [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    3: ["####.", "....#", "....#", ".###.", "....#", "....#", "####."],
    4: ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    5: ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    6: ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    7: ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    8: [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    9: [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
}


def synthetic_digits(num_samples: int = 1797, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images in [0, 16] like scikit-learn's digits: a glyph at a random offset and strength, noise."""
    generator = torch.Generator().manual_seed(seed)
    glyphs = torch.tensor(
        [[[c == "#" for c in row] for row in GLYPHS[d]] for d in range(10)], dtype=torch.float32
    )
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    images = torch.zeros(num_samples, 8, 8)
    rows = torch.randint(0, 2, (num_samples,), generator=generator)
    cols = torch.randint(0, 4, (num_samples,), generator=generator)
    strength = 10 + 6 * torch.rand(num_samples, generator=generator)
    for i in range(num_samples):
        r, c = int(rows[i]), int(cols[i])
        images[i, r : r + 7, c : c + 5] = glyphs[labels[i]] * strength[i]
    images += 2.0 * torch.randn(num_samples, 8, 8, generator=generator)
    return images.clamp(0, 16), labels


def load_digits_data() -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from sklearn.datasets import load_digits  # optional
    except ImportError:
        images, labels = synthetic_digits()
        return images, labels, "synthetic 8x8 glyphs"
    digits = load_digits()
    return (
        torch.tensor(digits.images, dtype=torch.float32),
        torch.tensor(digits.target),
        "scikit-learn digits",
    )


class SmallCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(dim=1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="per-rank batch without PACELINE_ASSIGNMENT"
    )
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    args = parser.parse_args()

    images, labels, source = load_digits_data()
    images = (images / 16.0).unsqueeze(1)
    split = int(0.8 * len(labels))
    train = TensorDataset(images[:split], labels[:split])

    torch.manual_seed(0)
    model = SmallCnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    with Worker.from_env(
        model, optimizer, train, loss_fn=nn.CrossEntropyLoss(), default_batch_size=args.batch_size
    ) as worker:
        log.info("training on %d %s samples, assignment %s", split, source, worker.assignment.to_json_dict())
        worker.train(epochs=args.epochs, log_every=20)
        if not worker.stopped_by_signal:
            model.eval()
            held_out = accuracy(model, images[split:].to(worker.device), labels[split:].to(worker.device))
            if worker.rank == 0:
                log.info("held-out accuracy after %d steps: %.3f", worker.global_step, held_out)
            worker.checkpoint()  # every rank: split modules are gathered collectively


if __name__ == "__main__":
    main()
