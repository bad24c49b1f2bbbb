"""What a polled repository relies on: memory budgets in config.toml, and verification that
hashes a version's files once, then trusts them while name, size and stamp are unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torchrig.errors import RepositoryError
from torchrig.repository import Repository, parse_config
from torchrig.repository.budget import format_bytes, parse_memory_budget

from .test_discovery import write_version


@pytest.mark.parametrize(
    ("value", "limit_of_8gib"),
    [
        ("4GiB", 4 << 30),
        ("512 MiB", 512 << 20),
        ("2GB", 2_000_000_000),
        ("1.5KiB", 1536),
        ("100B", 100),
        (0.5, 4 << 30),
        (1, 8 << 30),
    ],
)
def test_memory_budgets(value: str | float, limit_of_8gib: int) -> None:
    assert parse_memory_budget(value).limit(8 << 30) == limit_of_8gib


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('memory_budget = "4 gallons"', "memory_budget '4 gallons' is not a size"),
        ("memory_budget = 4", "a number is a fraction of device memory in (0, 1]"),
        ("memory_budget = 0", "a number is a fraction"),
        ('memory_budget = "0GiB"', "must be more than 0 bytes"),
        ("memory_budget = true", "$.memory_budget"),
    ],
)
def test_bad_memory_budgets_name_the_key_and_the_forms(text: str, needle: str) -> None:
    with pytest.raises(RepositoryError) as err:
        parse_config(text, origin="repo/m/config.toml")
    assert needle in err.value.message
    assert "repo/m/config.toml" in err.value.message


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (4, 1536, 5 << 20, 3 << 30)] == [
        "4 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


def test_a_verified_version_is_not_hashed_again_until_a_file_changes(tmp_path: Path) -> None:
    directory = write_version(tmp_path, "m", 1, payload=b"program")
    program = directory / "model.pt2"
    polled = Repository(tmp_path)
    assert polled.model("m").versions[0].complete
    # same size, same mtime, other bytes: only a hash would notice, and it is skipped
    stat = program.stat()
    program.write_bytes(b"PROGRAM")
    os.utime(program, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert polled.model("m").versions[0].complete
    fresh = Repository(tmp_path)  # a new index hashes: the bytes do not match
    assert "checksum" in (fresh.model("m").versions[0].problem or "")
    # a write that moves the mtime is hashed again, and caught
    program.write_bytes(b"PROGRAX")
    os.utime(program, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert "checksum" in (polled.model("m").versions[0].problem or "")


def test_model_names_and_a_vanished_model(tmp_path: Path) -> None:
    write_version(tmp_path, "a", 1)
    write_version(tmp_path, "b", 1)
    (tmp_path / ".tmp-upload").mkdir()
    repository = Repository(tmp_path)
    assert repository.model_names() == ["a", "b"]
    (tmp_path / "b" / "1" / "model.pt2").unlink()
    (tmp_path / "b" / "1" / "manifest.json").unlink()
    (tmp_path / "b" / "1").rmdir()
    (tmp_path / "b").rmdir()
    assert [m.name for m in repository.index().models] == ["a"]


def test_a_corrupt_version_is_reported_without_hashing_it_again(tmp_path: Path) -> None:
    directory = write_version(tmp_path, "m", 1, payload=b"program")
    program = directory / "model.pt2"
    stat = program.stat()
    program.write_bytes(b"PROGRAM")  # corrupt, same size
    os.utime(program, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    polled = Repository(tmp_path)
    assert "checksum" in (polled.model("m").versions[0].problem or "")
    program.write_bytes(b"program")  # repaired, but the stamp says nothing changed
    os.utime(program, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "checksum" in (polled.model("m").versions[0].problem or "")
    os.utime(program, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a real copy
    assert polled.model("m").versions[0].complete
