"""The layout's promises that a test can see: the worker image holds the worker runtime only."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_worker_package_holds_paceline_worker_only(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "worker-image", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
    ]
    subprocess.run([*build, str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("paceline_worker-*.whl")
    packages = {
        name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.endswith(".dist-info/")
    }
    assert {p for p in packages if not p.endswith(".dist-info")} == {"paceline_worker"}


def test_the_worker_image_copies_the_worker_runtime_only() -> None:
    dockerfile = (REPO / "worker-image" / "Dockerfile").read_text().splitlines()
    copied = [line.split()[1] for line in dockerfile if line.startswith("COPY")]
    assert copied == ["worker-image/pyproject.toml", "worker-image/paceline_worker/", "examples/train_*.py"]
