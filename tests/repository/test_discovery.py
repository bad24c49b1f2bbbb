"""Discovery on real directories (and an fsspec memory:// store): complete versions only."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import fsspec
import pytest

from torchrig.errors import ModelNotFound, RepositoryError
from torchrig.packaging.manifest import (
    FileEntry,
    Manifest,
    TensorSpec,
    manifest_to_json,
)
from torchrig.repository import Repository, parse_config, selected_versions


def write_version(root: Path, model: str, version: int, payload: bytes = b"program") -> Path:
    """A version laid out as `torchrig pack` lays it out: files, then manifest.json."""
    directory = root / model / str(version)
    directory.mkdir(parents=True)
    (directory / "model.pt2").write_bytes(payload)
    manifest = Manifest(
        name=model,
        version=version,
        format="torch.export",
        program="model.pt2",
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 2])],
        files=[
            FileEntry(
                path="model.pt2", sha256=hashlib.sha256(payload).hexdigest(), size=len(payload)
            )
        ],
        created_at="2026-11-27T00:00:00Z",
        torchrig_version="0.1.0",
    )
    (directory / "manifest.json").write_bytes(manifest_to_json(manifest))
    return directory


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_version(tmp_path, "ranker", 1)
    write_version(tmp_path, "ranker", 2)
    half = tmp_path / "ranker" / "3"
    half.mkdir()
    (half / "model.pt2").write_bytes(b"half-copied")  # no manifest yet
    corrupt = write_version(tmp_path, "ranker", 4)
    # the same size, other bytes: only the checksum tells this one from the original
    (corrupt / "model.pt2").write_bytes(b"progrAm")
    assert len(b"progrAm") == len(b"program")
    (tmp_path / "ranker" / "notes").mkdir()  # not a version
    (tmp_path / ".tmp-5-abc").mkdir()  # packing in progress: hidden
    write_version(tmp_path, "classifier", 1)
    (tmp_path / "classifier" / "config.toml").write_text(
        'device = "cpu"\n[batching]\nmax_batch_size = 8\n'
    )
    write_version(tmp_path, "typo", 1)
    (tmp_path / "typo" / "config.toml").write_text("[batching]\nmax_bacth_size = 8\n")
    return tmp_path


def test_index_reports_complete_and_incomplete_versions(repo: Path) -> None:
    index = Repository(repo).index()
    models = {m.name: m for m in index.models}
    assert set(models) == {"ranker", "classifier", "typo"}
    ranker = {v.version: v for v in models["ranker"].versions}
    assert [v for v in ranker if ranker[v].complete] == [1, 2]
    assert "no manifest.json" in (ranker[3].problem or "")
    assert "checksum" in (ranker[4].problem or "")
    # the latest *complete* version is served, never the half-copied or corrupt ones
    assert [v.version for v in selected_versions(models["ranker"])] == [2]
    assert models["classifier"].config is not None
    assert models["classifier"].config.batching.max_batch_size == 8


def test_a_typo_in_config_names_file_and_key(repo: Path) -> None:
    typo = Repository(repo).model("typo")
    assert typo.config is None
    assert typo.config_error is not None
    assert "max_bacth_size" in typo.config_error
    assert str(repo / "typo" / "config.toml") in typo.config_error


def test_manifest_in_the_wrong_directory_is_incomplete(repo: Path) -> None:
    moved = repo / "classifier" / "7"
    (repo / "classifier" / "1").rename(moved)
    (info,) = Repository(repo).model("classifier").versions
    assert not info.complete
    assert "lies in classifier/7" in (info.problem or "")


def test_unknown_model_and_missing_repository(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="ranker"):
        Repository(repo).model("nope")
    with pytest.raises(RepositoryError, match="not a directory"):
        Repository(tmp_path / "absent")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("", [2]),
        ('[version_policy]\npolicy = "all"\n', [2, 1]),
        ('[version_policy]\npolicy = "latest"\nlatest = 2\n', [2, 1]),
        ('[version_policy]\npolicy = "specific"\nversions = [1, 3]\n', [1]),
    ],
)
def test_version_policies(repo: Path, config: str, expected: list[int]) -> None:
    (repo / "ranker" / "config.toml").write_text(config)
    model = Repository(repo).model("ranker")
    assert [v.version for v in selected_versions(model)] == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[batching]\nmax_batch_size = 0\n", "max_batch_size must be >= 1"),
        ('device = "gpu"\n', "device 'gpu'"),
        ('instances = "two"\n', "$.instances"),
        ("threads = 0\n", "threads must be 1..1024"),
        ("threads = 100000\n", "threads must be 1..1024"),
        ("instances = 0\n", "instances must be 1..256"),
        ("instances = 100000\n", "instances must be 1..256"),
        ("thread = 2\n", "Known keys: "),
        ('[version_policy]\npolicy = "specific"\n', "must list versions"),
        ("[batching]\npreferred_batch_sizes = [128]\n", "preferred_batch_sizes [128]"),
        # TOML has nan and inf: a delay never over, a bound no batch meets
        ("[batching]\nmax_queue_delay_ms = nan\n", "max_queue_delay_ms must be 0..600000"),
        ("[batching]\nmax_queue_delay_ms = inf\n", "max_queue_delay_ms must be 0..600000"),
        ("[batching]\nmax_queue_delay_ms = -1\n", "max_queue_delay_ms must be 0..600000"),
        ("[batching]\ninline_max_ms = nan\n", "inline_max_ms must be a finite number"),
        ("[batching\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(RepositoryError) as err:
        parse_config(text, origin="repo/m/config.toml")
    assert needle in err.value.message
    assert "repo/m/config.toml" in err.value.message


def test_fsspec_repository_and_local_copy(repo: Path, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/repo-{uuid.uuid4().hex}"
    fs.put(str(repo / "ranker"), f"{root}/ranker", recursive=True)
    remote = Repository(f"memory://{root}", cache_dir=tmp_path / "cache")
    (ranker,) = remote.index().models
    complete = [v.version for v in ranker.versions if v.complete]
    assert complete == [1, 2]
    local = remote.local_version_dir(selected_versions(ranker)[0])
    assert (local / "model.pt2").read_bytes() == b"program"
    assert (local / "manifest.json").exists()
