"""Layer-graph format: presets, round trip, and errors that say what to fix."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from paceline.planner import GraphError, graph_from_dict, graph_to_dict, load_graph, preset
from paceline.planner.configs import layer_configs, split_options
from paceline.planner.graph import with_batch

MLP: dict[str, Any] = {
    "name": "mlp",
    "layers": [
        {
            "name": "fc1",
            "op": "gemm",
            "dims": {"b": 64, "n": 1024, "k": 512},
            "gemm": {"m": ["b"], "n": ["n"], "k": ["k"]},
            "inputs": [{"axes": ["b", "k"]}],
            "output": ["b", "n"],
            "weights": ["n", "k"],
        },
        {
            "name": "loss",
            "op": "softmax_xent",
            "dims": {"b": 64, "c": 1024},
            "inputs": [{"from": "fc1", "axes": ["b", "c"]}],
            "output": ["b", "c"],
        },
    ],
}


def test_presets_have_the_papers_shapes() -> None:
    alex = preset("alexnet")
    assert alex.batch_size == 128
    assert dict(alex.layer("fc6").dims)["k"] == 256 * 6 * 6
    assert alex.layer("conv1").output_shape == (128, 96, 55, 55)
    inception = preset("inceptionv3")
    assert len(inception.layers) == 219  # nodes 0..218 in the paper's Fig. 5
    assert inception.batch_size == 128
    rnn = preset("rnnlm")
    assert rnn.batch_size == 64 and rnn.min_split_size == 1
    assert dict(rnn.layer("lstm").dims) == {"l": 2, "s": 256, "b": 64, "n": 2048, "k": 2048}
    tr = preset("transformer")
    assert tr.batch_size == 64
    assert tr.layer("projection").output_shape == (64, 256, 50_000)


def test_round_trip_through_yaml() -> None:
    for name in ("alexnet", "transformer"):
        graph = preset(name)
        doc = yaml.safe_load(yaml.safe_dump(graph_to_dict(graph), sort_keys=False))
        assert graph_from_dict(doc) == graph


def test_load_graph_accepts_preset_and_inline_graph() -> None:
    assert load_graph({"preset": "AlexNet"}).name == "alexnet"
    assert [layer.name for layer in load_graph({"graph": MLP}).layers] == ["fc1", "loss"]


def _broken(**changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(MLP, sort_keys=False))
    layer = doc["layers"][changes.pop("layer", 1)]
    for key, value in changes.items():
        if value is None:
            layer.pop(key)
        else:
            layer[key] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_broken(inputs=[{"from": "fc9", "axes": ["b", "c"]}]), "'fc9', which is not a layer"),
        (_broken(op="conv3d"), "use one of"),
        (_broken(output=["b", "x"]), "uses dim 'x', which is not in `dims`"),
        (_broken(inputs=[{"from": "fc1", "axes": ["b"]}]), "has 1 axes"),
        (_broken(dims={"b": 64, "c": 0}), "sizes must be positive integers"),
        (_broken(layer=0, gemm={"m": ["b"], "n": ["n"], "k": []}), "every dim exactly once"),
        (_broken(name="fc1"), "duplicate layer name"),
        (_broken(output=None), "`output`"),
        (_broken(colour="red"), "unknown key(s) ['colour']"),
        ({"name": "x", "layers": []}, "has no layers"),
    ],
)
def test_format_errors_say_what_to_fix(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphError) as err:
        graph_from_dict(doc)
    assert message in str(err.value)


def test_consumer_before_producer_is_rejected() -> None:
    doc = yaml.safe_load(yaml.safe_dump(MLP, sort_keys=False))
    doc["layers"].reverse()
    with pytest.raises(GraphError, match="defined later"):
        graph_from_dict(doc)


def test_load_graph_rejects_unresolved_configmap() -> None:
    with pytest.raises(GraphError, match="configMapRef"):
        load_graph({"configMapRef": {"name": "m", "key": "graph.yaml"}})
    with pytest.raises(GraphError, match="unknown preset"):
        load_graph({"preset": "resnet9000"})


def test_split_rules_follow_pase() -> None:
    # divisors only, at least `min_split_size` elements per part, and at most p ways
    assert split_options(96, min_split_size=4, procs=64) == [1, 2, 3, 4, 6, 8, 12, 16, 24]
    assert split_options(3, min_split_size=4, procs=8) == [1]
    assert split_options(128, min_split_size=4, procs=64) == [1, 2, 4, 8, 16, 32]
    conv = preset("alexnet").layer("conv1")
    configs = layer_configs(conv, procs=32, min_split_size=4)
    assert (configs.prod(axis=1) <= 32).all()
    names = conv.dim_names
    assert (configs[:, [names.index("h"), names.index("w")]] == 1).all()  # no halo exchange for convs


def test_with_batch_resizes_every_batch_dim() -> None:
    graph = with_batch(preset("transformer"), 32)
    assert {dict(layer.dims).get("b", 32) for layer in graph.layers} == {32}
    assert graph.layer("dec0_cross_stack").output_shape == (3, 32, 256, 512)


def test_graph_yaml_survives_yaml_1_1_readers() -> None:
    """kubectl reads YAML 1.1, where a plain `n` or `y` is a boolean: such strings must come out quoted."""
    import re

    import yaml

    from paceline.planner.graph_io import dump_graph_yaml, graph_to_dict
    from paceline.planner.presets import preset

    class Yaml11Loader(yaml.SafeLoader):
        """Resolves y/n/yes/no/on/off as booleans, as Go's YAML 1.1 reader in kubectl does."""

    Yaml11Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:y|Y|n|N|yes|Yes|no|No|on|On|off|Off|true|True|false|False)$"),
        list("yYnNoOtTfF"),
    )
    graph = preset("alexnet")
    assert yaml.load(dump_graph_yaml(graph), Loader=Yaml11Loader) == graph_to_dict(graph)
