"""Tensor parallel inside pods, data parallel across them: 2 pods x 2 ranks (torchrun through the pod
launcher), the plan's Linear layers split colwise/rowwise, unequal per-pod shares. The trained parameters
equal single-process SGD (with momentum) on the same global batches, through a same-step share switch and a
checkpoint/resume; split layers hold 1/tp of their parameters on every rank."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _tp_pods import global_batches, logs, relative_difference, replay, results, run_pods

TP = 2
SIZES = [6, 16, 12, 4]
PLAN = {
    "tensorParallel": TP,
    "modules": {
        "0": {"kind": "linear", "style": "colwise", "shape": [16, 6], "output": "shard"},
        "2": {"kind": "linear", "style": "rowwise", "shape": [12, 16], "input": "shard"},
        "4": {"kind": "linear", "style": "colwise", "shape": [4, 12]},
    },
}
SAMPLES = 120


def pods(out: Path, *, args: list[str], checkpoint: Path, shares: tuple[int, int] = (5, 9)) -> list[int]:
    return run_pods(out, shares=list(shares), ranks_per_pod=2, plan=PLAN, args=args, checkpoint=checkpoint)


@pytest.mark.integration
def test_hybrid_equals_single_process_sgd_and_splits_parameters(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert pods(out, args=["--max-steps", "20", "--record-grads"], checkpoint=tmp_path / "ckpt") == [0, 0], (
        logs(out)
    )
    ranks = results(out, 4)
    assert [(r["localRank"], r["localWorldSize"]) for r in ranks] == [(0, 2), (1, 2), (0, 2), (1, 2)]
    for r in ranks:
        assert r["placements"] == {"0": "shard(0)/2", "2": "shard(1)/2", "4": "shard(0)/2"}
        bias_of_row_layer = 12 * 4  # a rowwise Linear's bias stays whole
        assert r["splitBytes"]["held"] <= r["splitBytes"]["full"] / TP + bias_of_row_layer, r["splitBytes"]

    # tensor-parallel peers train on the same samples; the two data-parallel groups on 5 and 9 of them
    def steps(rank: dict) -> list[dict]:  # what each step trained on (times and processes differ per rank)
        return [{k: v for k, v in r.items() if k not in ("time", "pid")} for r in rank["records"]]

    assert steps(ranks[0]) == steps(ranks[1]) and steps(ranks[2]) == steps(ranks[3])
    assert {len(rec["indices"]) for rec in ranks[0]["records"]} <= {5, 3}  # 120 = 8 x 14 + 8: last step 3/5
    final, grads = replay(global_batches(ranks), sizes=SIZES, samples=SAMPLES)
    recorded = torch.load(out / "grads.pt")
    assert max(relative_difference(g, e) for g, e in zip(recorded, grads, strict=True)) <= 1e-5
    assert relative_difference(torch.load(out / "final.pt"), final) <= 1e-5


@pytest.mark.integration
def test_hybrid_share_switch_and_resume_keep_the_sgd_trajectory(tmp_path: Path) -> None:
    checkpoint, first, second = tmp_path / "ckpt", tmp_path / "first", tmp_path / "second"
    switch = ["--switch-at", "4", "--switch-to", "11,3"]
    assert pods(first, args=["--max-steps", "10", *switch], checkpoint=checkpoint) == [0, 0], logs(first)
    assert pods(second, args=["--max-steps", "20"], checkpoint=checkpoint) == [0, 0], logs(second)
    one, two = results(first, 4), results(second, 4)
    assert [r["version"] for r in one[0]["records"]] == [1] * 5 + [2] * 5, "all ranks switch at one step"
    assert [r["step"] for r in two[0]["records"]] == list(range(10, 20)), "resumed at step 10"
    assert {r["version"] for r in two[0]["records"]} == {2}, "the switched shares survive the restart"
    joined = [{"records": a["records"] + b["records"]} for a, b in zip(one, two, strict=True)]
    final, _ = replay(global_batches(joined), sizes=SIZES, samples=SAMPLES)
    assert relative_difference(torch.load(second / "final.pt"), final) <= 1e-5


@pytest.mark.integration
def test_plan_for_another_model_stops_the_pod_with_a_message(tmp_path: Path) -> None:
    out = tmp_path / "bad"
    wrong = {
        "tensorParallel": 2,
        "modules": {"encoder.fc1": {"kind": "linear", "style": "colwise", "shape": [16, 6]}},
    }
    codes = run_pods(out, shares=[4], ranks_per_pod=2, plan=wrong, args=["--max-steps", "2"])
    assert codes[0] != 0 and codes[0] < 128, "a permanent failure, not a retryable one"
    assert "the plan splits module 'encoder.fc1'" in logs(out)
