"""`plan` and `graph` subcommands, and tracing a torch module into the format."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from paceline.planner import graph_from_dict, graph_to_dict, load_graph_file
from paceline.planner.__main__ import main


def test_plan_pase_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "alexnet", "--cost-model", "pase", "-p", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["procs"] == 32 and out["cost_model"] == "pase"
    assert out["searchSpace"] == "pase" and out["note"] == "PaSE full space (not all executable)"
    assert out["cost_s"] < out["dp_cost_s"]
    assert {row["layer"] for row in out["layers"] if row["kind"] == "model"} >= {"fc6", "fc7", "fc8"}


def test_plan_pase_text_says_not_all_executable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "alexnet", "--cost-model", "pase", "-p", "8"]) == 0
    assert "PaSE full space (not all executable)" in capsys.readouterr().out


def test_plan_pools_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "rnnlm", "--pool", "h100:8", "--pool", "t4:8", "--batch", "64"]) == 0
    out = capsys.readouterr().out
    assert "per-layer strategy" in out and "lstm" in out
    assert "plain data parallel" in out
    assert "search space: executable" in out and "executed: data-parallel" in out


WIDE_MLP = """
name: wide-mlp
layers:
- {name: fc1, module: fc1, op: gemm, dims: {b: 16, n: 8192, k: 1024}, gemm: {m: [b], n: [n], k: [k]},
   inputs: [{axes: [b, k]}], output: [b, n], weights: [n, k], pointwise: 1}
- {name: fc2, module: fc2, op: gemm, dims: {b: 16, n: 1024, k: 8192}, gemm: {m: [b], n: [n], k: [k]},
   inputs: [{from: fc1, axes: [b, k]}], output: [b, n], weights: [n, k]}
- {name: loss, op: softmax_xent, dims: {b: 16, c: 1024}, inputs: [{from: fc2, axes: [b, c]}], output: [b, c]}
"""


def test_plan_executable_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "mlp.yaml"
    graph.write_text(WIDE_MLP)
    args = [
        "plan",
        "--graph-file",
        str(graph),
        "--pool",
        "h100:4/2",
        "--workers",
        "2",
        "--gpus-per-worker",
        "2",
    ]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["searchSpace"] == "executable" and out["executed"] == "hybrid" and out["tensorParallel"] == 2
    assert [(s["module"], s["style"], s["output"], s["input"]) for s in out["splits"]] == [
        ("fc1", "colwise", "shard", "replicate"),
        ("fc2", "rowwise", "replicate", "shard"),
    ]
    assert out["sharding"]["modules"]["fc2"]["shape"] == [1024, 8192]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "search space: executable" in text and "executed: hybrid (tensor parallel 2)" in text
    assert "tensor-parallel modules" in text and "fc1 colwise, fc2 rowwise" in text


def test_plan_from_training_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        textwrap.dedent(
            """
            apiVersion: paceline.dev/v1alpha1
            kind: TrainingJob
            metadata: {name: demo}
            spec:
              model: {preset: alexnet}
              globalBatchSize: 96
              gpusPerWorker: 2
              replicas: {min: 1, max: 3}
              placement: {pools: [fast]}
            """
        )
    )
    code = main(["plan", "-f", str(job), "--pool", "fast=a100:8", "--pool", "slow=t4:8", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["workers"]) == 3
    assert {w["pool"] for w in out["workers"]} == {"fast"}
    assert all(w["gpus"] == 2 for w in out["workers"])
    assert sum(w["batch_share"] for w in out["workers"]) == 96


def test_plan_reports_errors_with_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "alexnet", "--pool", "h100:2", "--workers", "4"]) == 2
    assert "cannot place 4 workers" in capsys.readouterr().err
    assert main(["plan", "--model", "alexnet", "--pool", "tpu:8"]) == 2
    assert "unknown GPU 'tpu'" in capsys.readouterr().err


def test_graph_preset_to_yaml(tmp_path: Path) -> None:
    out = tmp_path / "g.yaml"
    assert main(["graph", "rnnlm", "-o", str(out)]) == 0
    assert [layer.name for layer in load_graph_file(out).layers] == ["embedding", "lstm", "fc", "loss"]


MODULE = """
import torch
from torch import nn


class SmallCNN(nn.Module):
    example_input_shape = (16, 3, 32, 32)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 8)

    def forward(self, x):
        return self.rnn(x)
"""


def test_graph_traces_a_torch_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "user_models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "cnn.yaml"
    assert main(["graph", "user_models:SmallCNN", "-o", str(out)]) == 0
    graph = load_graph_file(out)
    ops = [layer.op.value for layer in graph.layers]
    assert ops[:4] == ["gemm", "norm", "elementwise", "pool"]
    assert graph.layer("fc").output_shape == (16, 10)
    assert graph.layers[-1].op.value == "softmax_xent"
    assert graph_from_dict(json.loads(json.dumps(graph_to_dict(graph)))) == graph
    assert main(["graph", "user_models:Unsupported", "--input-shape", "4,2,8"]) == 2
    assert "GRU is not supported" in capsys.readouterr().err
