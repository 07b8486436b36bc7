"""Train the digits CNN of train_digits.py asynchronously: parameter-server shard(s) + workers.

Local run, one PS shard and two workers (what the operator does with 1 PS pod and 2 worker pods; loopback):

    export PYTHONPATH=worker-image PACELINE_PS_ADDRS=127.0.0.1:29600 WORLD_SIZE=2 PACELINE_METRICS_PORT=0
    PACELINE_ROLE=ps python -m paceline_worker.asynchronous.ps &
    RANK=0 python examples/train_digits_async.py & RANK=1 python examples/train_digits_async.py; wait

With PACELINE_ROLE=ps this script runs the PS itself, so one container command serves both pod kinds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paceline_worker.asynchronous import AsyncWorker
from paceline_worker.asynchronous.ps import main as ps_main
from train_digits import SmallCnn, accuracy, load_digits_data

log = logging.getLogger("train_digits_async")


def main() -> None:
    if os.environ.get("PACELINE_ROLE") == "ps":
        raise SystemExit(ps_main())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=4, help="passes over this worker's part of the data")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32, help="without PACELINE_ASSIGNMENT")
    parser.add_argument("--lr", type=float, default=0.05, help="PS learning rate (version 0)")
    parser.add_argument("--momentum", type=float, default=0.9, help="PS explicit momentum (version 0)")
    parser.add_argument("--result", type=Path, default=None, help="write held-out accuracy etc. as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    images, labels, source = load_digits_data()
    images = (images / 16.0).unsqueeze(1)
    split = int(0.8 * len(labels))
    train = TensorDataset(images[:split], labels[:split])

    torch.manual_seed(0)  # every worker builds the same initial model; the first to connect seeds the PS
    model = SmallCnn()
    with AsyncWorker.from_env(
        model,
        train,
        loss_fn=nn.CrossEntropyLoss(),
        learning_rate=args.lr,
        momentum=args.momentum,
        default_batch_size=args.batch_size,
    ) as worker:
        log.info("worker %d trains on %d %s samples", worker.rank, split, source)
        worker.train(epochs=None if args.max_steps else args.epochs, max_steps=args.max_steps, log_every=20)
        versions = worker.pull()
        model.eval()
        held_out = accuracy(model, images[split:].to(worker.device), labels[split:].to(worker.device))
        log.info(
            "worker %d: %d steps, model versions %s, held-out accuracy %.3f",
            worker.rank,
            worker.local_step,
            versions,
            held_out,
        )
        if args.result is not None:
            args.result.write_text(
                json.dumps(
                    {
                        "rank": worker.rank,
                        "steps": worker.local_step,
                        "versions": versions,
                        "accuracy": held_out,
                    }
                )
            )


if __name__ == "__main__":
    main()
