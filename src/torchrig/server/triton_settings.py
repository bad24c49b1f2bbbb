"""Triton's trace-setting and log-setting extensions, mapped onto torchrig's own settings.

Triton's clients read and change a running server's tracing and logging
(`get_trace_settings` / `update_trace_settings`, `get_log_settings` / `update_log_settings`;
REST `/v2/trace/setting`, `/v2/models/M/trace/setting`, `/v2/logging`; gRPC `TraceSetting`,
`LogSettings`). torchrig answers them with what it really has:

- trace settings: `trace_level` (`OFF` or `TIMESTAMPS`) and `trace_rate` (1 in N) decide
  the share of new traces (requests without a caller's `traceparent`) that are sampled,
  for the server or for one model; `access_log_sample` (torchrig's own key, a share from
  0 to 1, server-wide) is `--access-log-sample`. `trace_mode` is `opentelemetry`,
  `trace_count` -1, `log_frequency` 0 and `trace_file` "" (spans go to the OTLP exporter):
  they can be read, and set only to those values.
- log settings: `log_info`, `log_warning`, `log_error` and `log_verbose_level` are the
  level of torchrig's loggers (one level: `log_info` implies `log_warning` implies
  `log_error`; a verbose level above 0 is DEBUG); `log_file` ("": stdout) and `log_format`
  (`--log-format`) can be read only.

A setting given no value (JSON null, an empty gRPC SettingValue) goes back to the value
the server started with (for a model: to the server-wide one). Bad values are InvalidInput
naming the setting; callers check the management token before `update`.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

import msgspec

from torchrig.errors import InvalidInput
from torchrig.server.logs import LOGGERS
from torchrig.server.tracing import AccessLog

TRACE_LEVELS = ("OFF", "TIMESTAMPS")
# read-only trace settings: their only value
TRACE_FIXED = {
    "trace_mode": "opentelemetry",
    "trace_count": "-1",
    "log_frequency": "0",
    "trace_file": "",
}
TRACE_KEYS = ("trace_level", "trace_rate", "access_log_sample", *TRACE_FIXED)
MODEL_TRACE_KEYS = ("trace_level", "trace_rate")
LOG_KEYS = ("log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format")
# the lowest level each log flag lets through
LOG_FLAGS = (
    ("log_error", logging.ERROR),
    ("log_warning", logging.WARNING),
    ("log_info", logging.INFO),
)

TraceValue = str | list[str] | None


class TraceSettings:
    """The sampling of new traces (server-wide and per model) and of the access log."""

    def __init__(self, access_log: AccessLog, *, ratio: float = 1.0) -> None:
        self.access_log = access_log
        self._lock = threading.Lock()
        self._started = (True, ratio, access_log.sample)
        self._on, self._ratio = True, ratio
        self._models: dict[str, tuple[bool | None, float | None]] = {}
        self.exporting = False  # whether spans go to an OTLP exporter (OTEL_* variables)

    def started_with(self, ratio: float) -> None:
        """The server's starting ratio (OTEL_TRACES_SAMPLER_ARG), also what a cleared
        setting goes back to."""
        on, ratio = (True, ratio) if ratio > 0 else (False, 1.0)
        with self._lock:
            self._started = (on, ratio, self.access_log.sample)
            self._on, self._ratio = on, ratio

    def root_ratio(self, model: str) -> float:
        """The share of new traces sampled for a request to `model` (hot path: no lock,
        one dict lookup)."""
        on, ratio = self._on, self._ratio
        override = self._models.get(model)
        if override is not None:
            on = on if override[0] is None else override[0]
            ratio = ratio if override[1] is None else override[1]
        return ratio if on else 0.0

    def report(self, model: str | None = None) -> dict[str, str | list[str]]:
        """The settings in Triton's JSON shape (`trace_level` a list, the others strings)."""
        with self._lock:
            on, ratio = self._on, self._ratio
            override = self._models.get(model) if model else None
        if override is not None:
            on = on if override[0] is None else override[0]
            ratio = ratio if override[1] is None else override[1]
        return {
            "trace_level": ["TIMESTAMPS" if on else "OFF"],
            "trace_rate": str(_rate(ratio)),
            "access_log_sample": _share(self.access_log.sample),
            "trace_export": "otlp" if self.exporting else "off",
            **TRACE_FIXED,
        }

    def update(self, model: str | None, changes: Mapping[str, TraceValue]) -> None:
        """Apply `changes` (all of them or, on a bad value, none)."""
        on: bool | None = None
        ratio: float | None = None
        sample: float | None = None
        cleared: set[str] = set()
        for key, value in changes.items():
            if key not in TRACE_KEYS and key != "trace_export":
                raise InvalidInput(
                    f"unknown trace setting {key!r}; the settings are " + ", ".join(TRACE_KEYS)
                )
            if model and key not in MODEL_TRACE_KEYS:
                raise InvalidInput(
                    f"trace setting {key!r} is server-wide; set it on /v2/trace/setting "
                    "(no model name), or set only " + " and ".join(MODEL_TRACE_KEYS) + " per model"
                )
            if value is None:
                cleared.add(key)
                continue
            text = _one_value(key, value)
            if key == "trace_level":
                on = _level(text)
            elif key == "trace_rate":
                ratio = 1.0 / _positive_int(key, text)
            elif key == "access_log_sample":
                sample = _fraction(key, text)
            elif key == "trace_export":
                raise InvalidInput(
                    "trace setting 'trace_export' is read-only: spans are exported over OTLP "
                    "when the server starts with OTEL_EXPORTER_OTLP_ENDPOINT set"
                )
            elif text != TRACE_FIXED[key]:
                raise InvalidInput(
                    f"trace setting {key!r} can only be {TRACE_FIXED[key]!r} in torchrig "
                    "(traces are OpenTelemetry spans, sampled by trace_level and trace_rate)"
                )
        with self._lock:
            if model:
                old_on, old_ratio = self._models.get(model, (None, None))
                new_on = None if "trace_level" in cleared else old_on if on is None else on
                new_ratio = (
                    None if "trace_rate" in cleared else old_ratio if ratio is None else ratio
                )
                if new_on is None and new_ratio is None:
                    self._models.pop(model, None)
                else:
                    self._models[model] = (new_on, new_ratio)
                return
            started_on, started_ratio, started_sample = self._started
            if "trace_level" in cleared:
                self._on = started_on
            if "trace_rate" in cleared:
                self._ratio = started_ratio
            if "access_log_sample" in cleared:
                self.access_log.sample = started_sample
            if on is not None:
                self._on = on
            if ratio is not None:
                self._ratio = ratio
            if sample is not None:
                self.access_log.sample = sample


class LogSettings:
    """The level of torchrig's loggers as Triton's log flags."""

    def __init__(self, *, log_format: str, level: str) -> None:
        self.log_format = log_format
        numeric = logging.getLevelName(level.upper())
        self._started = numeric if isinstance(numeric, int) else logging.INFO

    def level(self) -> int:
        return logging.getLogger(LOGGERS[0]).getEffectiveLevel()

    def report(self) -> dict[str, bool | int | str]:
        level = self.level()
        flags: dict[str, bool | int | str] = {"log_file": ""}
        for key, lowest in reversed(LOG_FLAGS):
            flags[key] = level <= lowest
        flags["log_verbose_level"] = 1 if level <= logging.DEBUG else 0
        flags["log_format"] = self.log_format
        return flags

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set the level the flags describe (all of `changes` or, on a bad value, none)."""
        current = self.report()
        wanted: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in LOG_KEYS:
                raise InvalidInput(
                    f"unknown log setting {key!r}; the settings are " + ", ".join(LOG_KEYS)
                )
            if key in ("log_file", "log_format"):
                if value is not None and value != current[key]:
                    raise InvalidInput(
                        f"log setting {key!r} cannot change while serving (it is "
                        f"{current[key]!r}); restart with --log-format, and collect stdout"
                    )
                continue
            if value is None:  # back to the starting level's flag
                wanted[key] = _flags_of(self._started)[key]
                continue
            if key == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidInput(
                        f"log setting 'log_verbose_level' must be a non-negative integer, "
                        f"not {value!r}"
                    )
            elif not isinstance(value, bool):
                raise InvalidInput(f"log setting {key!r} must be true or false, not {value!r}")
            wanted[key] = value
        merged = {**current, **wanted}
        if "log_verbose_level" not in wanted and any(
            wanted.get(key) is False for key, _ in LOG_FLAGS
        ):
            merged["log_verbose_level"] = 0  # turning a level off ends debug logging too
        if merged["log_verbose_level"]:
            level = logging.DEBUG
        else:
            enabled = [lowest for key, lowest in LOG_FLAGS if merged[key]]
            level = min(enabled) if enabled else logging.CRITICAL
            for (key, _), (weaker, _) in itertools.pairwise(LOG_FLAGS):
                if merged[weaker] and not merged[key]:
                    raise InvalidInput(
                        f"log setting {weaker!r} is on but {key!r} is off; torchrig logs from "
                        "one level up (log_info implies log_warning implies log_error)"
                    )
        for name in LOGGERS:
            logging.getLogger(name).setLevel(level)


def _flags_of(level: int) -> dict[str, bool | int]:
    flags: dict[str, bool | int] = {key: level <= lowest for key, lowest in LOG_FLAGS}
    flags["log_verbose_level"] = 1 if level <= logging.DEBUG else 0
    return flags


def _one_value(key: str, value: TraceValue) -> str:
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or len(values) != 1
        or not all(isinstance(v, str) for v in values)
    ):
        raise InvalidInput(f"trace setting {key!r} takes one string value, not {value!r}")
    return values[0]


def _level(text: str) -> bool:
    level = text.upper()
    if level not in TRACE_LEVELS:
        raise InvalidInput(
            f"trace setting 'trace_level' {text!r} is not one of "
            + ", ".join(TRACE_LEVELS)
            + " (torchrig traces stage timestamps, never tensors)"
        )
    return level == "TIMESTAMPS"


def _positive_int(key: str, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise InvalidInput(
            f"trace setting {key!r} {text!r} must be a positive integer (1 in N new traces)"
        )
    return number


def _fraction(key: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise InvalidInput(f"trace setting {key!r} {text!r} must be a number from 0 to 1")
    return number


def _rate(ratio: float) -> int:
    """1 in N as Triton's trace_rate (a ratio not of that form is rounded; 0 is 'never')."""
    return max(1, round(1.0 / ratio)) if ratio > 0 else 0


def _share(value: float) -> str:
    return f"{value:g}"


def update_trace_json(settings: TraceSettings, model: str | None, body: bytes) -> None:
    """POST /v2/trace/setting (or /v2/models/M/trace/setting): a JSON object of settings,
    each a string, a list of one string, or null."""
    settings.update(model, _json_object(body, "trace"))


def update_log_json(settings: LogSettings, body: bytes) -> None:
    """POST /v2/logging: a JSON object of log settings (booleans, an integer, or null)."""
    settings.update(_json_object(body, "log"))


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        changes = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the {what} settings must be a JSON object ({exc})") from None
    if not isinstance(changes, dict):
        raise InvalidInput(
            f"the {what} settings must be a JSON object, not {type(changes).__name__}"
        )
    return changes
