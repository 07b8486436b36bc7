"""Train a wide MLP whose hidden layer Paceline splits across the GPUs of each pod (tensor parallel) while
pods train data parallel: the model in examples/mlp-job.yaml.

The data is synthetic and learnable: inputs are Gaussian, labels come from a fixed random teacher network
(seeded, generated here; nothing is downloaded). Run it as a job's pod would, on one machine:

    export PYTHONPATH=worker-image PET_NNODES=1 PET_NODE_RANK=0 PET_NPROC_PER_NODE=2 \
        PET_MASTER_ADDR=127.0.0.1 PET_MASTER_PORT=29500 PACELINE_METRICS_PORT=0 \
        PACELINE_ASSIGNMENT='{"version": 1, "batchSizes": [64]}' \
        PACELINE_PLAN="$(paceline plan -f examples/mlp-job.yaml --pool a100:4/2 --json | jq -c .sharding)"
    python -m paceline_worker.launch -- python examples/train_mlp.py --epochs 2

`paceline graph examples.train_mlp:WideMlp --input-shape 64,64` prints the model graph the job embeds.
"""

from __future__ import annotations

import argparse
import logging

import torch
from torch import nn
from torch.utils.data import TensorDataset

from paceline_worker import Worker

log = logging.getLogger("train_mlp")

FEATURES, HIDDEN, CLASSES = 64, 1024, 10


class WideMlp(nn.Module):
    """fc1 (64 → 1024) → ReLU → fc2 (1024 → 64) → ReLU → head (64 → 10): the Megatron MLP shape."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, HIDDEN)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(HIDDEN, FEATURES)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.fc2(self.act(self.fc1(x)))))


def teacher_data(samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, FEATURES, generator=generator)
    teacher = torch.randn(FEATURES, CLASSES, generator=generator)
    return inputs, (inputs @ teacher).argmax(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument(
        "--batch-size", type=int, default=64, help="per-pod batch without PACELINE_ASSIGNMENT"
    )
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    args = parser.parse_args()

    inputs, labels = teacher_data(args.samples)
    split = int(0.9 * args.samples)
    torch.manual_seed(0)
    model = WideMlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    train = TensorDataset(inputs[:split], labels[:split])
    with Worker.from_env(
        model, optimizer, train, loss_fn=nn.CrossEntropyLoss(), default_batch_size=args.batch_size
    ) as worker:
        split_modules = ", ".join(f"{m} {p}" for m, p in worker.module_placements().items()) or "none"
        log.info("training on %d samples; split modules: %s", split, split_modules)
        worker.train(epochs=args.epochs, log_every=20)
        if not worker.stopped_by_signal:
            with torch.no_grad():  # every rank: split modules compute together
                predicted = worker.model(inputs[split:].to(worker.device)).argmax(dim=1).cpu()
            accuracy = float((predicted == labels[split:]).float().mean())
            if worker.rank == 0:
                log.info("held-out accuracy after %d steps: %.3f", worker.global_step, accuracy)
            worker.checkpoint()


if __name__ == "__main__":
    main()
