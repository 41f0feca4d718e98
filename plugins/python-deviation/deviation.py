"""Moving mean-absolute-deviation detection per sensor, in plain Python.

This module is the algorithm and nothing else: it knows no WIT types, so it runs (and is unit-tested)
under an ordinary CPython. ``detector.py`` converts between it and the WIT contract.

Each sensor keeps its last ``window`` values. A new value ``x`` is judged against the values before
it::

    mean  = sum(history) / n
    mad   = sum(|v - mean| for v in history) / n       (mean absolute deviation)
    score = |x - mean| / max(mad, floor)

and is an anomaly when ``score > threshold`` (``thresholds`` may set another threshold per sensor
type). Until a sensor has ``min_history`` values its readings are warming up, with score 0. The
mean absolute deviation is less swayed by a single outlier in the history than the standard
deviation, and for normally distributed noise it is about 0.8 of it, so the default threshold 4
is roughly a 3.2-sigma rule.

A constant history (``mad == 0``) does not divide by zero: ``floor`` is 1e-12 of the mean's
magnitude (at least 1e-12), so a value equal to the constant scores 0 and any change scores very
high, and every score stays finite.

The statistics are recomputed from the window for every reading (two passes, no running sums that
drift); with the default window of 20 that is cheaper than keeping them exact incrementally.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterable, Optional, Tuple

#: The version of the format ``export_state`` writes. Bump it when the format changes shape.
STATE_VERSION = 1

#: Names of the sensor types, as the WIT enum ``sensor-type`` spells them.
SENSOR_TYPES = ("temperature", "humidity", "air-quality", "pressure", "co2")


class ConfigError(ValueError):
    """The configuration is not valid; the message names the key and why."""


class StateError(ValueError):
    """The state cannot be read by this version of the detector."""


@dataclass(frozen=True)
class Config:
    """Configuration of the detector (JSON keys of the same names; ``{}`` selects every default)."""

    #: Values kept per sensor. Default 20: enough for a stable mean, short enough to follow drift.
    window: int = 20
    #: Values a sensor needs before its readings are judged. Default 10.
    min_history: int = 10
    #: Score above which a reading is an anomaly. Default 4 (about 3.2 sigma for normal noise).
    threshold: float = 4.0
    #: Thresholds for particular sensor types (``"co2": 6.0``), overriding ``threshold``.
    thresholds: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        """Parses and validates a JSON configuration; raises ConfigError naming the first problem."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"configuration is not JSON: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError("configuration must be a JSON object")
        unknown = sorted(set(raw) - {"window", "min_history", "threshold", "thresholds"})
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r}")
        default = cls()
        window = _integer(raw, "window", default.window)
        min_history = _integer(raw, "min_history", default.min_history)
        threshold = _positive(raw.get("threshold", default.threshold), "threshold")
        thresholds = raw.get("thresholds", {})
        if not isinstance(thresholds, dict):
            raise ConfigError("thresholds must be an object of sensor type -> number")
        for sensor_type, value in thresholds.items():
            if sensor_type not in SENSOR_TYPES:
                raise ConfigError(f"thresholds: unknown sensor type {sensor_type!r}")
            _positive(value, f"thresholds.{sensor_type}")
        if window < 2:
            raise ConfigError(f"window must be at least 2, got {window}")
        if not 2 <= min_history <= window:
            raise ConfigError(f"min_history must be between 2 and window ({window}), got {min_history}")
        return cls(window, min_history, float(threshold), {k: float(v) for k, v in thresholds.items()})

    def threshold_for(self, sensor_type: str) -> float:
        """The threshold that applies to sensors of ``sensor_type``."""
        return self.thresholds.get(sensor_type, self.threshold)


def _integer(raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    # bool is an int in Python; `"window": true` is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    return value


def _positive(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Judgement:
    """The verdict on one value: ``score`` is None while warming up."""

    score: Optional[float]
    anomaly: bool = False


WARMING_UP = Judgement(None)


def mean_and_deviation(values: Iterable[float]) -> Tuple[float, float]:
    """The mean and the mean absolute deviation of ``values`` (not empty)."""
    values = list(values)
    mean = math.fsum(values) / len(values)
    return mean, math.fsum(abs(v - mean) for v in values) / len(values)


class MeanDeviation:
    """The detector: every sensor's recent values, by sensor id."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.history: Dict[str, Deque[float]] = {}

    def judge(self, sensor_id: str, sensor_type: str, value: float) -> Judgement:
        """Judges ``value`` against the sensor's history, then adds it to the history."""
        history = self.history.get(sensor_id)
        if history is None:
            history = self.history[sensor_id] = deque(maxlen=self.config.window)
        if len(history) < self.config.min_history:
            judgement = WARMING_UP
        else:
            mean, mad = mean_and_deviation(history)
            floor = max(abs(mean) * 1e-12, 1e-12)
            score = abs(value - mean) / max(mad, floor)
            judgement = Judgement(score, score > self.config.threshold_for(sensor_type))
        history.append(value)
        return judgement

    def export_state(self) -> bytes:
        """The complete state as JSON bytes: ``{"version": 1, "sensors": {sensor id: [values]}}``.

        Python writes a float as the shortest text that reads back as the same float, so the state
        round-trips exactly.
        """
        sensors = {sensor_id: list(values) for sensor_id, values in sorted(self.history.items())}
        return json.dumps({"version": STATE_VERSION, "sensors": sensors}, separators=(",", ":")).encode()

    def import_state(self, state: bytes) -> None:
        """Replaces the state with one ``export_state`` wrote; raises StateError and keeps the
        current state when it cannot be read."""
        try:
            raw = json.loads(state)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StateError(f"state is not JSON: {err}") from None
        if not isinstance(raw, dict) or "version" not in raw:
            raise StateError("state has no version")
        if raw["version"] != STATE_VERSION:
            raise StateError(f"state version {raw['version']!r} is not {STATE_VERSION}")
        sensors = raw.get("sensors")
        if not isinstance(sensors, dict):
            raise StateError("state has no sensors object")
        history: Dict[str, Deque[float]] = {}
        for sensor_id, values in sensors.items():
            if not isinstance(values, list) or not all(_is_finite_number(v) for v in values):
                raise StateError(f"history of sensor {sensor_id!r} is not a list of finite numbers")
            # A smaller window than the exporter's keeps the newest values.
            history[sensor_id] = deque((float(v) for v in values), maxlen=self.config.window)
        self.history = history


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

