"""The kopf wiring's own pieces that need no cluster."""

from __future__ import annotations


def test_kopf_decodes_watch_streams_with_orjson() -> None:
    """Pins the one kopf internal the operator relies on: if kopf moves it, this fails (nothing breaks)."""
    import orjson
    from kopf._cogs.clients import api as kopf_api

    from paceline.kopf_app import fast_watch_decoding

    assert fast_watch_decoding()
    assert kopf_api.json.loads is orjson.loads
    assert kopf_api.json.loads(b'{"type": "ADDED", "object": {"kind": "Pod"}}')["object"] == {"kind": "Pod"}
