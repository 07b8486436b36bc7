"""GPU utilisation and memory via NVML, read at scrape time; absent (no metric, no error) without a GPU."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .wire import WorkerMetric

log = logging.getLogger(__name__)


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # NVML library or driver missing: no GPU metrics
        log.info("NVML unavailable (%s); GPU metrics disabled", exc)
        return None


class NvmlCollector(Collector):
    def __init__(self, nvml: Any, handle: Any, labels: Mapping[str, str]) -> None:
        self._nvml = nvml
        self._handle = handle
        self._label_names = list(labels)
        self._label_values = list(labels.values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            utilization = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        except Exception as exc:
            log.warning("NVML query failed: %s", exc)
            return
        families = (
            (
                WorkerMetric.GPU_UTILIZATION,
                "GPU busy fraction over the last sample period",
                utilization.gpu / 100.0,
            ),
            (WorkerMetric.GPU_MEMORY_USED, "GPU memory in use", float(memory.used)),
            (WorkerMetric.GPU_MEMORY_TOTAL, "GPU memory in total", float(memory.total)),
        )
        for name, documentation, value in families:
            family = GaugeMetricFamily(name, documentation, labels=self._label_names)
            family.add_metric(self._label_values, value)
            yield family


def register_gpu_collector(registry: CollectorRegistry, *, gpu_index: int, labels: Mapping[str, str]) -> bool:
    """Register NVML metrics for the GPU at `gpu_index`; False (nothing registered) without NVML."""
    nvml = _nvml()
    if nvml is None:
        return False
    try:
        if nvml.nvmlDeviceGetCount() <= gpu_index:
            return False
        handle = nvml.nvmlDeviceGetHandleByIndex(gpu_index)
    except Exception as exc:
        log.info("no NVML device %d (%s); GPU metrics disabled", gpu_index, exc)
        return False
    registry.register(NvmlCollector(nvml, handle, labels))
    return True
