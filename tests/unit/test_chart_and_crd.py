"""One CRD source: the chart's copy must equal crds/, and the CRD must be structurally sound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from paceline import api
from paceline.api.defaults import CONFIG_MAP_KEY

REPO = Path(__file__).resolve().parents[2]


def test_chart_crds_match_the_source_of_truth() -> None:
    source = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copies = sorted(p.name for p in (REPO / "charts" / "paceline" / "crds").glob("*.yaml"))
    assert source == copies, "run `make chart-crds` to copy crds/ into the chart"
    for name in source:
        assert (REPO / "crds" / name).read_bytes() == (
            REPO / "charts" / "paceline" / "crds" / name
        ).read_bytes(), f"charts/paceline/crds/{name} drifted from crds/{name}: run `make chart-crds`"


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    """Paths of properties that lack a description (kubectl explain must read well)."""
    missing = []
    for name, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        if name not in ("apiVersion", "kind", "metadata") and not sub.get("description"):
            missing.append(here)
        missing += _walk(sub, here)
        if "items" in sub:
            missing += _walk(sub["items"], here + "[]")
    return missing


def test_every_spec_and_status_field_is_described() -> None:
    crd = yaml.safe_load((REPO / "crds" / "paceline.dev_trainingjobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema, "") == []


def test_no_float_fields_in_the_spec() -> None:
    crd = yaml.safe_load((REPO / "crds" / "paceline.dev_trainingjobs.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def types(schema: dict[str, Any]) -> set[str]:
        found = {schema.get("type", "")}
        for sub in (schema.get("properties") or {}).values():
            found |= types(sub)
        if "items" in schema:
            found |= types(schema["items"])
        return found

    assert "number" not in types(spec)


def _leaf_defaults(schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    """path → default of every CRD property whose default is a value (not an empty block)."""
    found: dict[str, Any] = {}
    for name, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        if "default" in sub and sub["default"] != {}:
            found[here] = sub["default"]
        found |= _leaf_defaults(sub, here)
    return found


def _flatten(doc: dict[str, Any], path: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        here = f"{path}.{key}" if path else key
        flat |= _flatten(value, here) if isinstance(value, dict) else {here: value}
    return flat


def test_the_crds_defaults_are_the_operators_defaults() -> None:
    crd = yaml.safe_load((REPO / "crds" / "paceline.dev_trainingjobs.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    ours = _flatten(api.DEFAULTS) | {
        "model.configMapRef.key": CONFIG_MAP_KEY,
    }
    assert _leaf_defaults(spec) == ours
