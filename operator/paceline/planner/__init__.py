"""Paceline's planner: PaSE's layer-graph DP extended to mixed GPU types, plus worker placement.

Entry points: `plan_job` (TrainingJob -> JobPlan, searching the strategies the workers can execute) and
`load_graph` (spec.model -> LayerGraph).
"""

from __future__ import annotations

from paceline.planner.configs import executable_configs
from paceline.planner.cost_models import HeteroCostModel, PaseCostModel
from paceline.planner.devices import DeviceCatalog, DeviceType, load_catalog
from paceline.planner.executable import executable_space, module_splits
from paceline.planner.graph import GraphError, LayerGraph
from paceline.planner.graph_io import dump_graph_yaml, graph_from_dict, graph_to_dict, load_graph_file
from paceline.planner.job import load_graph, plan_job
from paceline.planner.placement import PlacementError
from paceline.planner.presets import PRESETS, preset
from paceline.planner.strategy import DoesNotFit, Strategy, build_space, plan_strategy

__all__ = [
    "PRESETS",
    "DeviceCatalog",
    "DeviceType",
    "DoesNotFit",
    "GraphError",
    "HeteroCostModel",
    "LayerGraph",
    "PaseCostModel",
    "PlacementError",
    "Strategy",
    "build_space",
    "dump_graph_yaml",
    "executable_configs",
    "executable_space",
    "graph_from_dict",
    "graph_to_dict",
    "load_catalog",
    "load_graph",
    "load_graph_file",
    "module_splits",
    "plan_job",
    "plan_strategy",
    "preset",
]
