"""PaSE's benchmark graphs (Elango, IPDPS 2021) with the paper's sizes.

AlexNet and InceptionV3 at batch 128 (minimum split size 4), RNNLM and Transformer at batch 64 (minimum
split size 1, which lets PaSE split LSTM layers and attention heads). Layer shapes follow the paper's
public graph definitions; layers are built with `GraphBuilder` and serialise to the YAML format.
Their fc, embedding and weight-einsum layers name their module after the layer, so a user model whose
modules have those names can run the tensor-parallel splits the planner picks for them.
"""

from __future__ import annotations

from collections.abc import Callable

from paceline.planner.builder import GraphBuilder
from paceline.planner.graph import GraphError, LayerGraph


def alexnet(batch: int = 128) -> LayerGraph:
    g = GraphBuilder(
        name="alexnet", description="AlexNet, ImageNet 227x227, as in PaSE", modules_from_names=True
    )
    x = g.conv(
        None, (batch, 3, 227, 227), out_channels=96, kernel=(11, 11), stride=4, pointwise=1, name="conv1"
    )
    x = g.pool(x, g.shape(x), kernel=(3, 3), stride=2, name="pool1")
    x = g.conv(x, g.shape(x), out_channels=256, kernel=(5, 5), pad=(2, 2), pointwise=1, name="conv2")
    x = g.pool(x, g.shape(x), kernel=(3, 3), stride=2, name="pool2")
    x = g.conv(x, g.shape(x), out_channels=384, kernel=(3, 3), pad=(1, 1), pointwise=1, name="conv3")
    x = g.conv(x, g.shape(x), out_channels=384, kernel=(3, 3), pad=(1, 1), pointwise=1, name="conv4")
    x = g.conv(x, g.shape(x), out_channels=256, kernel=(3, 3), pad=(1, 1), pointwise=1, name="conv5")
    x = g.pool(x, g.shape(x), kernel=(3, 3), stride=2, name="pool5")
    x = g.flatten(x, name="flatten")
    x = g.fc(x, g.shape(x), 4096, pointwise=1, name="fc6")
    x = g.fc(x, g.shape(x), 4096, pointwise=1, name="fc7")
    x = g.fc(x, g.shape(x), 1024, name="fc8")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


def inceptionv3(batch: int = 128) -> LayerGraph:
    g = GraphBuilder(
        name="inceptionv3",
        description="InceptionV3 (no aux head), ImageNet 299x299, as in PaSE",
        modules_from_names=True,
    )

    def basic(
        x: str | None,
        shape: tuple[int, ...],
        out: int,
        kernel: tuple[int, int],
        stride: int = 1,
        pad: tuple[int, int] = (0, 0),
    ) -> str:
        conv = g.conv(x, shape, out_channels=out, kernel=kernel, stride=stride, pad=pad)
        return g.norm(conv, g.shape(conv), axis=0, kind="bn")

    def block_a(x: str, pool_features: int) -> str:
        s = g.shape(x)
        b1 = basic(x, s, 64, (1, 1))
        b5 = basic(x, s, 48, (1, 1))
        b5 = basic(b5, g.shape(b5), 64, (5, 5), pad=(2, 2))
        b3 = basic(x, s, 64, (1, 1))
        b3 = basic(b3, g.shape(b3), 96, (3, 3), pad=(1, 1))
        b3 = basic(b3, g.shape(b3), 96, (3, 3), pad=(1, 1))
        bp = g.pool(x, s, kernel=(3, 3), stride=1, pad=1)
        bp = basic(bp, g.shape(bp), pool_features, (1, 1))
        return g.concat([b1, b5, b3, bp], axis=1)

    def block_b(x: str) -> str:
        s = g.shape(x)
        b3 = basic(x, s, 384, (3, 3), stride=2)
        bd = basic(x, s, 64, (1, 1))
        bd = basic(bd, g.shape(bd), 96, (3, 3), pad=(1, 1))
        bd = basic(bd, g.shape(bd), 96, (3, 3), stride=2)
        bp = g.pool(x, s, kernel=(3, 3), stride=2)
        return g.concat([b3, bd, bp], axis=1)

    def block_c(x: str, c7: int) -> str:
        s = g.shape(x)
        b1 = basic(x, s, 192, (1, 1))
        b7 = basic(x, s, c7, (1, 1))
        b7 = basic(b7, g.shape(b7), c7, (1, 7), pad=(0, 3))
        b7 = basic(b7, g.shape(b7), 192, (7, 1), pad=(3, 0))
        bd = basic(x, s, c7, (1, 1))
        bd = basic(bd, g.shape(bd), c7, (7, 1), pad=(3, 0))
        bd = basic(bd, g.shape(bd), c7, (1, 7), pad=(0, 3))
        bd = basic(bd, g.shape(bd), c7, (7, 1), pad=(3, 0))
        bd = basic(bd, g.shape(bd), 192, (1, 7), pad=(0, 3))
        bp = g.pool(x, s, kernel=(3, 3), stride=1, pad=1)
        bp = basic(bp, g.shape(bp), 192, (1, 1))
        return g.concat([b1, b7, bd, bp], axis=1)

    def block_d(x: str) -> str:
        s = g.shape(x)
        b3 = basic(x, s, 192, (1, 1))
        b3 = basic(b3, g.shape(b3), 320, (3, 3), stride=2)
        b7 = basic(x, s, 192, (1, 1))
        b7 = basic(b7, g.shape(b7), 192, (1, 7), pad=(0, 3))
        b7 = basic(b7, g.shape(b7), 192, (7, 1), pad=(3, 0))
        b7 = basic(b7, g.shape(b7), 192, (3, 3), stride=2)
        bp = g.pool(x, s, kernel=(3, 3), stride=2)
        return g.concat([b3, b7, bp], axis=1)

    def block_e(x: str) -> str:
        s = g.shape(x)
        b1 = basic(x, s, 320, (1, 1))
        b3 = basic(x, s, 384, (1, 1))
        b3a = basic(b3, g.shape(b3), 384, (1, 3), pad=(0, 1))
        b3b = basic(b3, g.shape(b3), 384, (3, 1), pad=(1, 0))
        b3 = g.concat([b3a, b3b], axis=1)
        bd = basic(x, s, 448, (1, 1))
        bd = basic(bd, g.shape(bd), 384, (3, 3), pad=(1, 1))
        bda = basic(bd, g.shape(bd), 384, (1, 3), pad=(0, 1))
        bdb = basic(bd, g.shape(bd), 384, (3, 1), pad=(1, 0))
        bd = g.concat([bda, bdb], axis=1)
        bp = g.pool(x, s, kernel=(3, 3), stride=1, pad=1)
        bp = basic(bp, g.shape(bp), 192, (1, 1))
        return g.concat([b1, b3, bd, bp], axis=1)

    x = basic(None, (batch, 3, 299, 299), 32, (3, 3), stride=2)
    x = basic(x, g.shape(x), 32, (3, 3))
    x = basic(x, g.shape(x), 64, (3, 3), pad=(1, 1))
    x = g.pool(x, g.shape(x), kernel=(3, 3), stride=2)
    x = basic(x, g.shape(x), 80, (1, 1))
    x = basic(x, g.shape(x), 192, (3, 3))
    x = g.pool(x, g.shape(x), kernel=(3, 3), stride=2)
    for pool_features in (32, 64, 64):
        x = block_a(x, pool_features)
    x = block_b(x)
    for c7 in (128, 160, 160, 192):
        x = block_c(x, c7)
    x = block_d(x)
    x = block_e(x)
    x = block_e(x)
    x = g.reduce_mean(x, g.shape(x), axes=(2, 3))
    x = g.fc(x, g.shape(x), 1000, name="fc")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


def rnnlm(batch: int = 64) -> LayerGraph:
    vocab, units, seq, layers = 100_000, 2048, 256, 2
    g = GraphBuilder(
        name="rnnlm",
        min_split_size=1,
        description="2-layer LSTM language model, as in PaSE",
        modules_from_names=True,
    )
    x = g.embedding((batch, seq), vocab, units, name="embedding")
    x = g.lstm(x, g.shape(x), layers=layers, units=units, name="lstm")
    x = g.fc(x, g.shape(x), vocab, name="fc")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


def transformer(batch: int = 64) -> LayerGraph:
    seq, vocab, embed, heads, ff, blocks, dk = 256, 50_000, 512, 8, 2048, 6, 64
    g = GraphBuilder(
        name="transformer",
        min_split_size=1,
        description="Transformer (base), as in PaSE",
        modules_from_names=True,
    )
    act = (batch, seq, embed)

    def attention(xs: list[str], tag: str) -> str:
        if len(xs) == 3:
            stacked = g.stack(xs, act, name=f"{tag}_stack")
            qkv = g.einsum(
                "sble,shek->sbhlk",
                (stacked, (3, *act)),
                (None, (3, heads, embed, dk)),
                weights=True,
                name=f"{tag}_qkv",
            )
        else:
            qkv = g.einsum(
                "ble,shek->sbhlk",
                (xs[0], act),
                (None, (3, heads, embed, dk)),
                weights=True,
                name=f"{tag}_qkv",
            )
        parts = g.unstack(qkv, name=f"{tag}_split")
        part = g.shape(parts)
        logits = g.einsum("bhlk,bhmk->bhlm", (parts, part), (parts, part), name=f"{tag}_logits")
        weights = g.softmax(logits, g.shape(logits), axis=3, name=f"{tag}_softmax")
        scores = g.einsum("bhlm,bhmk->bhlk", (weights, g.shape(weights)), (parts, part), name=f"{tag}_scores")
        out = g.einsum(
            "bhlk,hek->ble",
            (scores, g.shape(scores)),
            (None, (heads, embed, dk)),
            weights=True,
            name=f"{tag}_out",
        )
        added = g.elementwise([xs[0], out], act, name=f"{tag}_add")
        return g.norm(added, act, axis=-1, name=f"{tag}_norm")

    def feed_forward(x: str, tag: str) -> str:
        h = g.einsum(
            "ble,ef->blf", (x, act), (None, (embed, ff)), weights=True, pointwise=2, name=f"{tag}_ff1"
        )
        o = g.einsum("blf,fe->ble", (h, g.shape(h)), (None, (ff, embed)), weights=True, name=f"{tag}_ff2")
        added = g.elementwise([x, o], act, name=f"{tag}_ffadd")
        return g.norm(added, act, axis=-1, name=f"{tag}_ffnorm")

    x = g.embedding((batch, seq), vocab, embed, name="enc_embedding")
    x = g.elementwise([x, None], act, name="enc_posenc")
    for i in range(blocks):
        x = feed_forward(attention([x], f"enc{i}_att"), f"enc{i}")
    enc = x
    x = g.embedding((batch, seq), vocab, embed, name="dec_embedding")
    x = g.elementwise([x, None], act, name="dec_posenc")
    for i in range(blocks):
        x = attention([x], f"dec{i}_self")
        x = attention([x, enc, enc], f"dec{i}_cross")
        x = feed_forward(x, f"dec{i}")
    x = g.einsum("ble,ev->blv", (x, act), (None, (embed, vocab)), weights=True, name="projection")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


PRESETS: dict[str, Callable[[], LayerGraph]] = {
    "alexnet": alexnet,
    "inceptionv3": inceptionv3,
    "rnnlm": rnnlm,
    "transformer": transformer,
}


def preset(name: str) -> LayerGraph:
    """A preset graph by name (`alexnet`, `inceptionv3`, `rnnlm`, `transformer`)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    aliases = {"inception": "inceptionv3", "inception3": "inceptionv3"}
    key = aliases.get(key, key)
    if key not in PRESETS:
        raise GraphError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[key]()
