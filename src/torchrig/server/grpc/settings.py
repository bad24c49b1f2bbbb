"""TraceSetting and LogSettings messages <-> the dictionaries of `triton_settings`."""

from __future__ import annotations

from typing import Any

from torchrig.server.grpc.generated import grpc_service_pb2 as pb
from torchrig.server.triton_settings import TraceValue


def trace_changes(request: pb.TraceSettingRequest) -> dict[str, TraceValue]:
    """The settings a TraceSettingRequest changes: its values, or None (no value: back to
    the default)."""
    return {
        key: (list(setting.value) or None) if len(setting.value) != 1 else setting.value[0]
        for key, setting in request.settings.items()
    }


def trace_response(report: dict[str, str | list[str]]) -> pb.TraceSettingResponse:
    response = pb.TraceSettingResponse()
    for key, value in report.items():
        response.settings[key].value.extend([value] if isinstance(value, str) else value)
    return response


def log_changes(request: pb.LogSettingsRequest) -> dict[str, Any]:
    """The settings a LogSettingsRequest changes (None: back to the starting value)."""
    changes: dict[str, Any] = {}
    for key, setting in request.settings.items():
        kind = setting.WhichOneof("parameter_choice")
        changes[key] = None if kind is None else getattr(setting, kind)
    return changes


def log_response(report: dict[str, bool | int | str]) -> pb.LogSettingsResponse:
    response = pb.LogSettingsResponse()
    for key, value in report.items():
        if isinstance(value, bool):
            response.settings[key].bool_param = value
        elif isinstance(value, int):
            response.settings[key].uint32_param = value
        else:
            response.settings[key].string_param = value
    return response
