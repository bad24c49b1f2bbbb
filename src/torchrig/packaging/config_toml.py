"""Write a `ModelConfig` as the model's config.toml (the reader is repository.config)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec

from torchrig.repository.config import CONFIG_FILE, ModelConfig


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: `values = { "mask" = 0 }`
        return (
            "{" + ", ".join(f"{json.dumps(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot write {value!r} to TOML")


def config_toml(config: ModelConfig) -> str:
    """TOML text of a config: top-level keys first, then one table per section."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.extend((f"[{key}]", item) for item in value)  # [[preprocess]] entries
        elif value is not None and value != []:
            lines.append(f"{key} = {_value(value)}")
    for table, values in tables:
        lines.append(f"\n[{table}]")
        lines.extend(f"{k} = {_value(v)}" for k, v in values.items() if v is not None)
    return "\n".join(lines) + "\n"


def write_config_if_absent(model_dir: Path, config: ModelConfig) -> bool:
    """Write `<model_dir>/config.toml` unless one exists (never overwrite a user's file)."""
    path = model_dir / CONFIG_FILE
    if path.exists():
        return False
    staging = model_dir / f".{CONFIG_FILE}.tmp-{os.getpid()}"
    staging.write_text(config_toml(config), encoding="utf-8")
    os.replace(staging, path)
    return True
