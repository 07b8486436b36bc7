"""`paceline top` renders what a user wants to see from the jobs' status."""

from __future__ import annotations

from rich.console import Console

from paceline.top import run_top, view


def _job(name: str, **status: object) -> dict:
    return {"metadata": {"namespace": "ml", "name": name}, "spec": {"mode": "Asynchronous"}, "status": status}


def test_top_shows_jobs_workers_shares_speed_stragglers_and_momentum() -> None:
    jobs = [
        _job(
            "async",
            phase="Running",
            workersReady=2,
            throughput={"samplesPerSecond": "812.5", "efficiency": "0.91"},
            momentum={"explicit": "0.400", "implicit": "0.500", "total": "0.900"},
            assignmentVersion=3,
            workers=[
                {
                    "rank": 1,
                    "pod": "async-worker-1",
                    "node": "gpu-t4-0",
                    "gpuProduct": "Tesla-T4",
                    "batchShare": 16,
                    "samplesPerSecond": "120.0",
                    "relativeSpeed": "1.00",
                    "straggler": "Persistent",
                },
                {
                    "rank": 0,
                    "pod": "async-worker-0",
                    "node": "gpu-h100-0",
                    "gpuProduct": "NVIDIA-H100-80GB-HBM3",
                    "batchShare": 48,
                    "samplesPerSecond": "690.1",
                    "relativeSpeed": "3.95",
                    "straggler": "Healthy",
                },
            ],
        ),
        _job("queued"),
    ]
    console = Console(record=True, width=220)
    run_top(fetch=lambda: jobs, interval_s=0, once=True, console=console)
    text = console.export_text()
    for expected in (
        "ml/async",
        "Running",
        "2/2",
        "812.5",
        "0.91",
        "0.400 + 0.500 → 0.900",
        "v3",
        "ml/queued",
    ):
        assert expected in text
    lines = text.splitlines()
    h100 = next(line for line in lines if "async-worker-0" in line)
    t4 = next(line for line in lines if "async-worker-1" in line)
    assert lines.index(h100) < lines.index(t4)  # by rank
    assert h100.count("█") > t4.count("█")  # the bigger share has the longer bar
    assert "Persistent" in t4 and "3.95×" in h100 and "NVIDIA-H100-80GB-HBM3" in h100


def test_top_with_no_jobs_says_so() -> None:
    console = Console(record=True, width=120)
    console.print(view([]))
    assert "no TrainingJobs" in console.export_text()
