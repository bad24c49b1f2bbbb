"""The management API on a real server in explicit mode: bearer token, load and unload,
the readable index, and model names that try to leave the repository (raw HTTP)."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from cli_runs import torchrig
from faults import body, pack_faulty
from serving import running
from torchrig.errors import ConfigError, ManagementDisabled
from torchrig.server.management import TOKEN_ENV, Management, read_management_token
from torchrig.settings import ServeSettings

TOKEN = "s3cret-token-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("management-source")
    pack_faulty(root, "m", 1)
    pack_faulty(root, "m", 2)
    return root


@pytest.fixture(scope="module")
def explicit(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    repo = tmp_path_factory.mktemp("management") / "models"
    shutil.copytree(source / "m" / "1", repo / "m" / "1")
    shutil.copytree(source / "m" / "1", repo / "n" / "1")
    manifest = json.loads((repo / "n" / "1" / "manifest.json").read_text())
    manifest["name"] = "n"
    (repo / "n" / "1" / "manifest.json").write_text(json.dumps(manifest))
    settings = ServeSettings(port=0, log_format="text", control_mode="explicit")
    with running(repo, settings, management_token=TOKEN) as (url, _):
        yield url, repo


def raw(
    url: str, method: str, target: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Send a request line exactly as written (no client normalises it); (status, body)."""
    parts = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += ["Connection: close", "", ""]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload.decode("utf-8", "replace")


def test_load_and_unload_need_the_bearer_token(explicit: tuple[str, Path]) -> None:
    url, _ = explicit
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
        for action in ("load", "unload"):
            response = httpx.post(f"{url}/v2/repository/models/m/{action}", headers=headers)
            assert response.status_code == 401, response.text
            assert "Authorization: Bearer" in response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")
    # nothing changed: m still serves
    assert httpx.post(f"{url}/v2/models/m/infer", json=body([1.0])).status_code == 200


def test_unload_drains_and_load_brings_back_the_policy_versions(
    explicit: tuple[str, Path], source: Path
) -> None:
    url, repo = explicit
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v2/repository/models/m/unload", headers=AUTH).status_code == 200
        gone = client.post("/v2/models/m/infer", json=body([1.0]))
        assert gone.status_code == 503
        index = client.post("/v2/repository/index").json()  # readable without a token
        assert {"name": "m", "version": "1", "state": "UNLOADED", "reason": ""} in index
        assert client.get("/v2/health/ready").status_code == 200  # n still serves
        again = client.post("/v2/repository/models/m/unload", headers=AUTH)
        assert again.status_code == 404
        # a new version uploaded meanwhile is what the load brings in
        shutil.copytree(source / "m" / "2", repo / "m" / "2")
        assert client.post("/v2/repository/models/m/load", headers=AUTH).status_code == 200
        answer = client.post("/v2/models/m/infer", json=body([3.0])).json()
        assert (answer["model_version"], answer["outputs"][0]["data"]) == ("2", [6.0, 0.0])


def test_loading_unknown_and_broken_models(explicit: tuple[str, Path], source: Path) -> None:
    url, repo = explicit
    with httpx.Client(base_url=url, timeout=60) as client:
        missing = client.post("/v2/repository/models/zzz/load", headers=AUTH)
        assert missing.status_code == 404
        assert "not in repository" in missing.json()["error"]
        broken = repo / "b" / "1"
        shutil.copytree(source / "m" / "1", broken)
        (broken / "manifest.json").write_text("{")  # unreadable manifest: no version
        index = client.post("/v2/repository/index").json()
        assert {"name": "b", "state": "UNAVAILABLE", "reason": "not loaded"} in index
        failed = client.post("/v2/repository/models/b/load", headers=AUTH)
        assert failed.status_code == 503
        assert "no complete version" in failed.json()["error"]
        ready_only = client.post("/v2/repository/index", json={"ready": True}).json()
        assert {row["state"] for row in ready_only} == {"READY"}
        assert client.post("/v2/models/n/infer", json=body([1.0])).status_code == 200


PERCENT = "is percent-encoded"
RELATIVE = "is a relative path segment"
# each path with the one rule that must refuse it (so removing a rule fails its cases)
TRAVERSALS = [
    ("/v2/repository/models/../secret/load", f"model name '..' in the path {RELATIVE}"),
    ("/v2/repository/models/..%2F..%2Fetc/load", PERCENT),
    ("/v2/repository/models/%2e%2e%2fsecret/load", PERCENT),
    ("/v2/repository/models/%2E%2E/load", PERCENT),
    ("/v2/repository/models//etc/passwd/load", "model name '' in the path is empty"),
    ("/v2/repository/models/%2Fetc%2Fpasswd/load", PERCENT),
    ("/v2/repository/models/..\\..\\etc/load", "contains a backslash"),
    ("/v2/repository/models/%5C..%5Cetc/load", PERCENT),
    ("/v2/repository/models/m%00/load", PERCENT),
    ("/v2/repository/models/m/../n/load", f"path segment '..' after model m {RELATIVE}"),
    ("/v2/repository/models/m%2Fx/unload", PERCENT),
    ("/v2/models/..%2Fm/infer", PERCENT),
    ("/v2/models/%2e%2e/ready", PERCENT),
    ("/v2/models/m-!/ready", "model name 'm-!' in the path has other characters"),
    ("/v2/%6dodels/..%2Fm/ready", "percent-encodes part of '/v2/models/'; send it plain"),
]


@pytest.mark.parametrize(("target", "reason"), TRAVERSALS)
def test_path_traversal_in_model_names_is_refused(
    explicit: tuple[str, Path], target: str, reason: str
) -> None:
    url, _ = explicit
    method = "GET" if target.endswith("/ready") else "POST"
    for headers in (AUTH, {}):  # refused before any token check or lookup
        status, text = raw(url, method, target, headers)
        assert status == 400, (target, status, text)
        assert reason in json.loads(text)["error"], (target, text)


def test_a_real_client_with_a_pre_encoded_url_is_refused_too(explicit: tuple[str, Path]) -> None:
    url, _ = explicit
    target = httpx.URL(f"{url}/v2/repository/models/..%2Fsecret/load")
    response = httpx.post(target, headers=AUTH)
    assert response.status_code == 400
    assert "percent-encoded" in response.json()["error"]


def test_without_a_token_the_management_api_is_off(server: tuple[str, Any]) -> None:
    url, _ = server  # the demo server: control mode none, no token
    response = httpx.post(f"{url}/v2/repository/models/ranker/unload", headers=AUTH)
    assert response.status_code == 403
    assert TOKEN_ENV in response.json()["error"]
    assert httpx.post(f"{url}/v2/models/ranker/infer", content=b"{}").status_code == 400


def test_a_token_outside_explicit_mode_is_refused(server: tuple[str, Any]) -> None:
    _, state = server
    management = Management(state.registry, control_mode="poll", token=TOKEN)
    with pytest.raises(ManagementDisabled, match="--control-mode explicit"):
        management.authorize(AUTH)


def test_token_sources(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    assert read_management_token(str(token_file), {}) == TOKEN
    assert read_management_token("", {TOKEN_ENV: TOKEN}) == TOKEN
    assert read_management_token("", {}) is None
    with pytest.raises(ConfigError, match="keep one"):
        read_management_token(str(token_file), {TOKEN_ENV: TOKEN})
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_management_token(str(token_file), {})
    with pytest.raises(ConfigError, match="cannot read"):
        read_management_token(str(tmp_path / "absent"), {})


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--control-mode", "sometimes"], "--control-mode 'sometimes'"),
        (["--poll-interval-s", "0"], "--poll-interval-s must be positive"),
        # NaN passed "<= 0" and then crashed on int(); infinity was no limit at all
        (["--max-body-mb", "nan"], "--max-body-mb must be positive and finite (not nan)"),
        (["--header-timeout-s", "inf"], "--header-timeout-s must be positive and finite"),
        (["--max-body-buffer-mb", "-1"], "--max-body-buffer-mb must be positive"),
        (["--management-token-file", "/nonexistent/token"], "cannot read the management token"),
    ],
)
def test_serve_refuses_bad_control_settings(tmp_path: Path, args: list[str], needle: str) -> None:
    done = torchrig("serve", str(tmp_path), *args, timeout_s=120)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
