"""Parameter-server checkpoints: a shard's state saved and restored by parameter name, also across a change
of the number of shards; atomic files; a restored shard resumes its version, buffer and hyperparameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paceline_worker.asynchronous import ParameterShard
from paceline_worker.asynchronous.hyperparameters import Hyperparameters
from paceline_worker.asynchronous.ps_checkpoint import (
    ShardState,
    load_states,
    read_state,
    restore_shard,
    save_state,
    shard_file,
)
from paceline_worker.asynchronous.sharding import ParameterSpec, assign_shards
from paceline_worker.wire import HyperparameterUpdate

MODEL = (
    ParameterSpec(name="a.weight", shape=(4, 3)),
    ParameterSpec(name="a.bias", shape=(4,)),
    ParameterSpec(name="b.weight", shape=(2, 4)),
    ParameterSpec(name="b.bias", shape=(2,)),
)
TOTAL = sum(s.numel for s in MODEL)


def _full(offset: float) -> dict[str, np.ndarray]:
    """Distinct values per parameter name: name → flat tensor."""
    out, start = {}, 0
    for spec in MODEL:
        out[spec.name] = np.arange(start, start + spec.numel, dtype=np.float32) + offset
        start += spec.numel
    return out


def _trained_shard(shard: int, shards: int, *, steps: int, lr: float = 0.1) -> ParameterShard:
    """A shard initialised from the full model and trained `steps` updates with momentum 0.5."""
    layout = assign_shards(MODEL, shards)[shard]
    values = np.concatenate([_full(0.0)[s.name] for s in layout.specs])
    ps = ParameterShard(shard=shard)
    ps.initialise(
        fingerprint=layout.fingerprint(),
        values=values,
        learning_rate=lr,
        momentum=0.5,
        model=MODEL,
        shards=shards,
    )
    for step in range(steps):
        ps.apply(worker="w", read_version=ps.version, gradient=np.full(values.size, step + 1.0, np.float32))
    return ps


def _by_name(state: ShardState | object, layout_values: np.ndarray, shard: int, shards: int) -> dict:
    layout = assign_shards(MODEL, shards)[shard]
    out, offset = {}, 0
    for spec in layout.specs:
        out[spec.name] = layout_values[offset : offset + spec.numel]
        offset += spec.numel
    return out


def test_a_restored_shard_continues_exactly_where_the_saved_one_was(tmp_path: Path) -> None:
    original = _trained_shard(0, 1, steps=5)
    state = original.state()
    assert state is not None and state.version == 5
    save_state(tmp_path, state)
    restored = restore_shard(load_states(tmp_path), shard=0, shards=1)
    assert not isinstance(restored, str)
    assert (restored.version, restored.resharded, restored.sources) == (5, False, (0,))
    twin = ParameterShard(shard=0)
    twin.restore(restored)
    assert twin.version == 5 and twin.fingerprint == original.fingerprint
    gradient = np.linspace(-1, 1, TOTAL).astype(np.float32)
    _, a = original.apply(worker="w", read_version=5, gradient=gradient)
    _, b = twin.apply(worker="w", read_version=5, gradient=gradient)
    np.testing.assert_array_equal(a.values, b.values)  # the momentum buffer came back too
    assert twin.updates_after(0)[0].index == 5  # the update sequence goes on from the saved version
    other = np.zeros(TOTAL + 1, np.float32)
    with pytest.raises(ValueError, match="checkpoint of another model"):
        twin.initialise(fingerprint="other", values=other, learning_rate=0.1, momentum=0.0)


def test_restore_by_parameter_name_when_the_number_of_shards_changes(tmp_path: Path) -> None:
    two = [_trained_shard(s, 2, steps=3 + s) for s in range(2)]
    for ps in two:
        state = ps.state()
        assert state is not None
        save_state(tmp_path, state)
    saved = {**_by_name(None, two[0].read().values, 0, 2), **_by_name(None, two[1].read().values, 1, 2)}
    states = load_states(tmp_path)
    one = restore_shard(states, shard=0, shards=1)  # 2 → 1: everything from both files
    assert not isinstance(one, str)
    assert one.resharded and one.sources == (0, 1) and one.version == 4  # the higher version: never back
    for name, values in _by_name(None, one.values, 0, 1).items():
        np.testing.assert_array_equal(values, saved[name])
    three = [restore_shard(states, shard=s, shards=3) for s in range(3)]  # 2 → 3
    held: dict[str, np.ndarray] = {}
    for index, part in enumerate(three):
        assert not isinstance(part, str)
        held.update(_by_name(None, part.values, index, 3))
    assert set(held) == {s.name for s in MODEL}
    for name, values in held.items():
        np.testing.assert_array_equal(values, saved[name])


def test_a_re_sharded_shard_writing_first_does_not_destroy_what_another_still_restores(
    tmp_path: Path,
) -> None:
    single = _trained_shard(0, 1, steps=4).state()
    assert single is not None
    save_state(tmp_path, single)
    first = restore_shard(load_states(tmp_path), shard=0, shards=2)  # 1 → 2 shards: shard 0 is back first
    assert not isinstance(first, str)
    new0 = ParameterShard(shard=0)
    new0.restore(first)
    new0.apply(worker="w", read_version=4, gradient=np.ones(first.values.size, np.float32))
    written = new0.state()
    assert written is not None and written.shards == 2
    save_state(tmp_path, written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ps-shard-0-of-1.npz", "ps-shard-0-of-2.npz"]
    late = restore_shard(load_states(tmp_path), shard=1, shards=2)  # shard 1 comes back later
    assert not isinstance(late, str) and late.sources == (0,) and late.version == 4
    expected = _by_name(None, single.values, 0, 1)
    for name, values in _by_name(None, late.values, 1, 2).items():
        np.testing.assert_array_equal(values, expected[name])
    again = restore_shard(load_states(tmp_path), shard=0, shards=2)  # the newer file wins for shard 0
    assert not isinstance(again, str) and again.version == 5 and not again.resharded
    np.testing.assert_array_equal(again.values, written.values)


def test_the_newest_file_wins_and_a_missing_tensor_is_reported() -> None:
    stale = _trained_shard(1, 2, steps=2).state()  # left behind by an earlier layout of 2 shards
    fresh = _trained_shard(0, 1, steps=7).state()  # the current single shard holds everything
    assert stale is not None and fresh is not None
    stale = ShardState(**{**stale.__dict__, "saved_at": 1.0})
    fresh = ShardState(**{**fresh.__dict__, "saved_at": 2.0})
    restored = restore_shard([fresh, stale], shard=0, shards=1)
    assert not isinstance(restored, str)
    assert (restored.version, restored.sources, restored.resharded) == (7, (0,), False)
    np.testing.assert_array_equal(restored.values, fresh.values)
    half = _trained_shard(0, 2, steps=3).state()  # 2 shards, only shard 0 ever saved
    assert half is not None
    missing = restore_shard([half], shard=0, shards=1)
    assert isinstance(missing, str) and "no checkpoint holds" in missing and "b." in missing
    assert restore_shard([], shard=0, shards=1) == "no checkpoint"


def test_restored_hyperparameters_and_a_newer_environment_override() -> None:
    ps = _trained_shard(0, 1, steps=1)
    ps.set_hyperparameters(HyperparameterUpdate(version=4, learning_rate=None, momentum=0.2))
    state = ps.state()
    assert state is not None
    restored = restore_shard([state], shard=0, shards=1)
    assert not isinstance(restored, str)
    assert restored.hyperparameters == Hyperparameters(version=4, learning_rate=0.1, momentum=0.2)
    older = ParameterShard(shard=0, initial=HyperparameterUpdate(version=1, learning_rate=None, momentum=0.9))
    older.restore(restored)
    assert older.hyperparameters == restored.hyperparameters  # the operator's first version is older
    newer = ParameterShard(shard=0, initial=HyperparameterUpdate(version=5, learning_rate=None, momentum=0.7))
    newer.restore(restored)
    assert newer.hyperparameters == Hyperparameters(version=5, learning_rate=0.1, momentum=0.7)


def test_files_are_written_atomically_and_unreadable_ones_are_skipped(tmp_path: Path) -> None:
    state = _trained_shard(0, 1, steps=1).state()
    assert state is not None
    path = save_state(tmp_path / "ck", state)
    assert path == shard_file(tmp_path / "ck", 0, 1)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["ps-shard-0-of-1.npz"]  # no temporary left
    again = read_state(path)
    assert (again.version, again.model, again.shards) == (1, MODEL, 1)
    (tmp_path / "ck" / "ps-shard-1-of-2.npz").write_bytes(b"not a checkpoint")
    assert [s.shard for s in load_states(tmp_path / "ck")] == [0]
    assert load_states(tmp_path / "absent") == []


def test_a_shard_refuses_a_model_that_does_not_give_its_layout() -> None:
    layout = assign_shards(MODEL, 2)[1]
    ps = ParameterShard(shard=1)
    with pytest.raises(ValueError, match="does not give layout"):
        ps.initialise(
            fingerprint=layout.fingerprint(),
            values=np.zeros(layout.numel, np.float32),
            learning_rate=0.1,
            momentum=0.0,
            model=MODEL,
            shards=3,
        )
    legacy = ParameterShard(shard=0)  # a worker that does not describe its model: no checkpoints
    legacy.initialise(fingerprint="f", values=np.zeros(3, np.float32), learning_rate=0.1, momentum=0.0)
    assert legacy.state() is None
