"""An s3:// repository served in poll mode, against a real S3 server (moto's, on loopback):
uploaded with s3fs, served through fsspec, a new version uploaded while serving (files
first, manifest last) is ignored until complete, then hot-swapped in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from doubles import until
from faults import body, pack_faulty
from serving import running
from torchrig.settings import ServeSettings

BUCKET = "models"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 server on 127.0.0.1, an OS-assigned port; yields an s3fs filesystem."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # what botocore reads: the endpoint (AWS_ENDPOINT_URL_S3) and credentials
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.call_s3("create_bucket", Bucket=BUCKET)
    try:
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_s3_repository_follows_uploads_while_serving(s3: Any, tmp_path: Path) -> None:
    local = tmp_path / "local"
    pack_faulty(local, "m", 1)
    pack_faulty(local, "m", 2)
    s3.put(str(local / "m" / "1"), f"{BUCKET}/repo/m/1", recursive=True)
    s3.put(str(local / "m" / "config.toml"), f"{BUCKET}/repo/m/config.toml")
    settings = ServeSettings(port=0, log_format="text", control_mode="poll", poll_interval_s=0.1)
    cache = tmp_path / "cache"
    with (
        running(f"s3://{BUCKET}/repo", settings, cache_dir=cache) as (url, state),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        first = client.post("/v2/models/m/infer", json=body([2.0])).json()
        assert (first["model_version"], first["outputs"][0]["data"]) == ("1", [2.0, 0.0])
        registry = state.registry
        # the new version's files, but not its manifest yet: not a version
        for item in sorted((local / "m" / "2").iterdir()):
            if item.name != "manifest.json":
                s3.put(str(item), f"{BUCKET}/repo/m/2/{item.name}")
        seen = registry.refreshes
        # two full polls saw the upload
        until(lambda: registry.refreshes >= seen + 2, timeout_s=60.0)
        # (model, version) pairs: CI once saw [1, 1, 1] here under load, names unknown
        assert [(v.model, v.version) for v in registry.versions()] == [("m", 1)]
        s3.put(str(local / "m" / "2" / "manifest.json"), f"{BUCKET}/repo/m/2/manifest.json")
        until(lambda: registry.resolve("m").version == 2, timeout_s=60.0)
        second = client.post("/v2/models/m/infer", json=body([2.0])).json()
        assert (second["model_version"], second["outputs"][0]["data"]) == ("2", [4.0, 0.0])
        # removed from the bucket: the previous version comes back
        s3.rm(f"{BUCKET}/repo/m/2", recursive=True)
        until(lambda: registry.resolve("m").version == 1, timeout_s=60.0)
        until(
            lambda: [(v.model, v.version) for v in registry.versions()] == [("m", 1)],
            lambda: str([(v.model, v.version, v.state) for v in registry.versions()]),
            timeout_s=60.0,
        )
        assert client.get("/v2/health/ready").status_code == 200
    assert list(cache.iterdir()) == []  # each local copy went with its version
