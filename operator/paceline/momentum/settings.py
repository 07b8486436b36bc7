"""The TrainingJob spec's `momentumTuning` block, parsed and validated (decimals arrive as strings)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

_PATH = "spec.momentumTuning"


class MomentumPolicy(enum.StrEnum):
    AUTO = "Auto"  # explicit momentum = target − measured implicit momentum (clamped)
    FIXED = "Fixed"  # explicit momentum = target, implicit only reported


@dataclass(frozen=True, kw_only=True)
class MomentumSettings:
    policy: MomentumPolicy = MomentumPolicy.AUTO
    target: float = 0.9
    floor: float = -0.3
    min_change: float = 0.02
    half_life_updates: int = 200

    def __post_init__(self) -> None:
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"{_PATH}.target: must be in [0, 1), got {self.target}")
        if not -1.0 <= self.floor <= self.target:
            raise ValueError(f"{_PATH}.floor: must be in [-1, target={self.target}], got {self.floor}")
        if not 0.0 <= self.min_change <= 0.5:
            raise ValueError(f"{_PATH}.minChange: must be in [0, 0.5], got {self.min_change}")
        if self.half_life_updates < 1:
            raise ValueError(f"{_PATH}.halfLifeUpdates: must be >= 1, got {self.half_life_updates}")

    @classmethod
    def from_spec(cls, block: Mapping[str, Any] | None, *, target: str | None = None) -> MomentumSettings:
        """Parse `spec.momentumTuning`; raises ValueError naming the field and the fix.

        The target may sit in the block (`target`) or be passed here from `spec.optimizer.momentum`
        (the CRD's place for it), not both.
        """
        if block is None:
            block = {}
        if not isinstance(block, Mapping):
            raise ValueError(f"{_PATH}: must be a mapping, got {type(block).__name__}")
        allowed = ("policy", "target", "floor", "minChange", "halfLifeUpdates")
        unknown = sorted(set(block) - set(allowed))
        if unknown:
            raise ValueError(f"{_PATH}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        policy_raw = block.get("policy", MomentumPolicy.AUTO.value)
        choices = [p.value for p in MomentumPolicy]
        if policy_raw not in choices:
            raise ValueError(f"{_PATH}.policy: must be one of {' or '.join(choices)}, got {policy_raw!r}")
        if target is not None and "target" in block:
            raise ValueError(f"{_PATH}.target: the target is spec.optimizer.momentum; remove {_PATH}.target")
        target_path = f"{_PATH}.target" if target is None else "spec.optimizer.momentum"
        raw_target = block.get("target", "0.9") if target is None else target
        target_value = _decimal_value(raw_target, target_path, "0.9", Decimal(0), Decimal(1), upper_open=True)
        floor = _decimal_value(
            block.get("floor", "-0.3"), f"{_PATH}.floor", "-0.3", Decimal(-1), Decimal(str(target_value))
        )
        min_change = _decimal_value(
            block.get("minChange", "0.02"), f"{_PATH}.minChange", "0.02", Decimal(0), Decimal("0.5")
        )
        half_life = block.get("halfLifeUpdates", 200)
        if isinstance(half_life, bool) or not isinstance(half_life, int):
            raise ValueError(f"{_PATH}.halfLifeUpdates: must be an integer, got {half_life!r}; e.g. 200")
        if not 1 <= half_life <= 1_000_000:
            raise ValueError(f"{_PATH}.halfLifeUpdates: must be between 1 and 1000000, got {half_life}")
        return cls(
            policy=MomentumPolicy(policy_raw),
            target=target_value,
            floor=floor,
            min_change=min_change,
            half_life_updates=half_life,
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "target": _fmt(self.target),
            "floor": _fmt(self.floor),
            "minChange": _fmt(self.min_change),
            "halfLifeUpdates": self.half_life_updates,
        }


def _fmt(value: float) -> str:
    return format(Decimal(repr(value)).normalize(), "f")


def _decimal_value(
    raw: Any, path: str, default: str, low: Decimal, high: Decimal, *, upper_open: bool = False
) -> float:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(
            f'{path}: must be a decimal string (the spec has no floats), got {raw!r}; write e.g. "{default}"'
        )
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f'{path}: {raw!r} is not a decimal number; write e.g. "{default}"') from None
    if not value.is_finite():
        raise ValueError(f'{path}: must be a finite decimal, got {raw!r}; write e.g. "{default}"')
    too_high = value >= high if upper_open else value > high
    if value < low or too_high:
        bracket = ")" if upper_open else "]"
        raise ValueError(f"{path}: must be in [{low}, {high}{bracket}, got {raw!r}")
    return float(value)
