"""One typed settings object for the CLI and (later) the server.

Each option is declared once, as a dataclass field with its help text. The CLI
derives its flags from the fields (`settings_options`), and the same fields are
read from a TOML config file and from `TORCHRIG_<SECTION>_<FIELD>` variables.
Precedence, lowest first: defaults, config file, environment, command-line flags.
Nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import click

from torchrig.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "TORCHRIG_"
CONFIG_ENV = "TORCHRIG_CONFIG"

F = TypeVar("F", bound=Callable[..., Any])


def _option(help_text: str, *, flag: str | None = None) -> dict[str, Any]:
    return {"help": help_text, "flag": flag}


@dataclasses.dataclass(frozen=True)
class DoctorSettings:
    """Options of `torchrig doctor`."""

    deep: bool = dataclasses.field(
        default=False,
        metadata=_option(
            "Also run live probes: a kernel and a checked matmul per GPU, the SDPA "
            "backends, and an all-reduce across local devices."
        ),
    )
    require_gpu: bool = dataclasses.field(
        default=False,
        metadata=_option("Treat 'no usable GPU' as a failure (for containers that must have one)."),
    )
    strict: bool = dataclasses.field(
        default=False, metadata=_option("Exit 1 when any check warns (default: warnings exit 0).")
    )
    probe_timeout_s: float = dataclasses.field(
        default=180.0,
        metadata=_option("Seconds the --deep probes may take before they are reported as hung."),
    )
    min_shm_mb: int = dataclasses.field(
        default=1024,
        metadata=_option(
            "The /dev/shm size (MiB) below which the doctor warns; below a quarter of it "
            "with several GPUs it fails."
        ),
    )


@dataclasses.dataclass(frozen=True)
class EnvSettings:
    """Options of `torchrig env`."""

    deep: bool = dataclasses.field(
        default=False,
        metadata=_option(
            "Include the --deep probe results (which SDPA backends run) in the snapshot."
        ),
    )
    strict: bool = dataclasses.field(
        default=False,
        metadata=_option("`env check`: risky differences fail too, not only breaking."),
    )
    model_deps: str = dataclasses.field(
        default="",
        metadata=_option(
            "Comma-separated distributions the model's code imports: their changes are risky."
        ),
    )


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Options of `torchrig serve`."""

    host: str = dataclasses.field(
        default="127.0.0.1",
        metadata=_option("Address to listen on (0.0.0.0 in a container)."),
    )
    port: int = dataclasses.field(
        default=8000, metadata=_option("TCP port; 0 picks a free one (printed at start).")
    )
    grpc_port: int = dataclasses.field(
        default=8001,
        metadata=_option(
            "TCP port of the V2 gRPC service (as Triton's); 0 picks a free one, -1 turns gRPC off."
        ),
    )
    device: str = dataclasses.field(
        default="",
        metadata=_option('Device for every model ("cpu", "cuda", "cuda:N"); default: config.toml.'),
    )
    log_format: str = dataclasses.field(
        default="json", metadata=_option("json (one object per line) or text.")
    )
    log_level: str = dataclasses.field(default="info", metadata=_option("Log level."))
    access_log_sample: float = dataclasses.field(
        default=0.01,
        metadata=_option(
            "Share of inference requests with a JSON access-log line (logger "
            "torchrig.access: model, version, status, sizes, duration, request and trace "
            "ids): 0 none, 1 every request; server errors always."
        ),
    )
    max_body_mb: float = dataclasses.field(
        default=64.0, metadata=_option("Largest request body accepted (413 beyond).")
    )
    max_body_buffer_mb: float = dataclasses.field(
        default=1024.0,
        metadata=_option(
            "Request bodies being received at once, in all, per server process, at most "
            "(503 with Retry-After beyond): bounds the memory that many slow or large uploads "
            "can hold."
        ),
    )
    max_header_kb: float = dataclasses.field(
        default=64.0,
        metadata=_option("Largest request line and header block accepted (431 beyond)."),
    )
    max_headers: int = dataclasses.field(
        default=100, metadata=_option("Most header fields a request may have (431 beyond).")
    )
    header_timeout_s: float = dataclasses.field(
        default=10.0,
        metadata=_option(
            "How long a client may take to send a request's line and headers, counted from "
            "its first byte or from connecting (408 and closed past it); on the gRPC port, "
            "to set up HTTP/2."
        ),
    )
    body_timeout_s: float = dataclasses.field(
        default=60.0,
        metadata=_option(
            "How long a client may take to send a request's body once its headers arrived "
            "(408 and closed past it)."
        ),
    )
    max_connections: int = dataclasses.field(
        default=1024,
        metadata=_option(
            "Open connections (or requests in flight) at most, on each port; 503 beyond "
            "(gRPC: the connection is closed, and calls past it are RESOURCE_EXHAUSTED)."
        ),
    )
    request_timeout_s: float = dataclasses.field(
        default=30.0,
        metadata=_option("Deadline of a request without a `timeout` parameter (504 past it)."),
    )
    max_request_timeout_s: float = dataclasses.field(
        default=300.0, metadata=_option("Cap on a request's own `timeout` parameter.")
    )
    drain_timeout_s: float = dataclasses.field(
        default=30.0,
        metadata=_option("On SIGTERM, how long in-flight requests may take to finish."),
    )
    workers: int = dataclasses.field(
        default=1,
        metadata=_option(
            "Server processes sharing the port, each with its own copy of the models and its "
            "share of the visible GPUs (CUDA_VISIBLE_DEVICES): one per GPU to use them all, or "
            "more than 1 when one process cannot parse requests as fast as the GPU computes."
        ),
    )
    require_gpu: bool = dataclasses.field(
        default=False,
        metadata=_option("The startup doctor fails (server never ready) without a usable GPU."),
    )
    allow_python_handlers: bool = dataclasses.field(
        default=False,
        metadata=_option(
            "Run model versions that are Python handlers (`pack --handler`). Loading such a "
            "version executes its code (only the bytes its manifest's sha256 names); without "
            "this flag they are refused and not ready."
        ),
    )
    control_mode: str = dataclasses.field(
        default="none",
        metadata=_option(
            "How models change while serving: none (loaded at start), poll (follow the "
            "repository every --poll-interval-s) or explicit (the management API loads and "
            "unloads)."
        ),
    )
    poll_interval_s: float = dataclasses.field(
        default=10.0,
        metadata=_option("With --control-mode poll: seconds between two looks at the repository."),
    )
    management_token_file: str = dataclasses.field(
        default="",
        metadata=_option(
            "File holding the bearer token of the management API (or set "
            "TORCHRIG_SERVE_MANAGEMENT_TOKEN); without a token the API is off."
        ),
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """All of torchrig's settings, one section per concern."""

    doctor: DoctorSettings = dataclasses.field(default_factory=DoctorSettings)
    env: EnvSettings = dataclasses.field(default_factory=EnvSettings)
    serve: ServeSettings = dataclasses.field(default_factory=ServeSettings)


SECTIONS: dict[str, type[Any]] = {
    "doctor": DoctorSettings,
    "env": EnvSettings,
    "serve": ServeSettings,
}


def _field_type(cls: type[Any], name: str) -> type[Any]:
    hint = get_type_hints(cls)[name]
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint  # type: ignore[no-any-return]


def _coerce(value: Any, target: type[Any], where: str) -> Any:
    """Turn a config or environment value into the field's type, or say what is wrong."""
    if target is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{where}: {value!r} is not a boolean; use true or false.")
    if target in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        try:
            return target(value)
        except (TypeError, ValueError):
            kind = "an integer" if target is int else "a number"
            raise ConfigError(f"{where}: {value!r} is not {kind}.") from None
    if target is str:
        return str(value)
    raise ConfigError(f"{where}: unsupported setting type {target!r}.")  # pragma: no cover


def _env_name(section: str, name: str) -> str:
    return f"{ENV_PREFIX}{section}_{name}".upper()


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build `Settings` from defaults, a TOML file, `TORCHRIG_*` variables and CLI overrides.

    `overrides` maps a section to {field: value}; `None` values mean "not given".
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}.") from None
        unknown = sorted(set(file_values) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"config file {config_file}: unknown section(s) {', '.join(unknown)}; "
                f"known sections are {', '.join(sorted(SECTIONS))}."
            )

    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        table = file_values.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"config file {config_file}: [{section}] must be a table.")
        for key, raw in table.items():
            if key not in names:
                raise ConfigError(
                    f"config file {config_file}: [{section}] has no setting {key!r}; "
                    f"known: {', '.join(names)}."
                )
            values[key] = _coerce(
                raw, _field_type(cls, key), f"config file {config_file} [{section}] {key}"
            )
        for name in names:
            var = _env_name(section, name)
            if var in env:
                values[name] = _coerce(env[var], _field_type(cls, name), f"variable {var}")
        for name, raw in (overrides or {}).get(section, {}).items():
            if raw is not None:
                values[name] = raw
        sections[section] = cls(**values)
    return Settings(**sections)


def settings_options(section: str, only: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Click decorator adding one flag per field of a settings section (or the `only` ones).

    Flags default to `None` so that `load_settings` can tell "not given" from a value.
    """
    cls = SECTIONS[section]

    def decorate(func: F) -> F:
        for field in reversed(dataclasses.fields(cls)):
            if only is not None and field.name not in only:
                continue
            flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
            env = _env_name(section, field.name)
            help_text = f"{field.metadata.get('help', '')} [env {env}; default {field.default}]"
            target = _field_type(cls, field.name)
            if target is bool:
                decorator = click.option(
                    flag, field.name, is_flag=True, default=None, help=help_text
                )
            else:
                decorator = click.option(
                    flag, field.name, type=target, default=None, help=help_text
                )
            func = decorator(func)
        return func

    return decorate
