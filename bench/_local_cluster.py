"""A throwaway local cluster for the benchmarks that need one (run them under the local-cluster lock)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from paceline_dev.localcluster.cluster import LocalCluster


@contextlib.contextmanager
def throwaway_cluster(
    config: dict[str, Any], *, prefix: str, keep: bool, report: Callable[[str], None]
) -> Iterator[LocalCluster]:
    """A local cluster of `config`'s node pools, operator included, in a new temporary state directory;
    stopped afterwards, and its directory removed unless `keep`."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "cluster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cluster = LocalCluster(work / "state", config_path=work / "cluster.yaml", report=report)
    try:
        cluster.up(operator=True)
        yield cluster
    finally:
        cluster.down()
        if keep:
            report(f"state kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
