"""Corrupted, truncated and half-written versions give errors that name the file and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.errors import ArtifactError
from torchrig.packaging import load_program, read_manifest, verify_files


def test_an_intact_copy_verifies(ranker_copy: Path) -> None:
    verify_files(ranker_copy, read_manifest(ranker_copy))


def test_a_flipped_byte_is_caught_by_its_checksum(ranker_copy: Path) -> None:
    program = ranker_copy / "model.pt2"
    data = bytearray(program.read_bytes())
    data[len(data) // 2] ^= 0xFF
    program.write_bytes(bytes(data))
    manifest = read_manifest(ranker_copy)
    with pytest.raises(
        ArtifactError, match=r"model\.pt2 is corrupted \(checksum mismatch\): its sha256"
    ) as caught:
        verify_files(ranker_copy, manifest)
    assert "re-pack it with `torchrig pack`" in caught.value.message
    with pytest.raises(ArtifactError, match=r"model\.pt2 is corrupted"):
        load_program(ranker_copy, manifest)


def test_a_truncated_file_is_named(ranker_copy: Path) -> None:
    golden = ranker_copy / "golden.pt"
    golden.write_bytes(golden.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"golden\.pt has 100 bytes, the manifest says"):
        verify_files(ranker_copy, read_manifest(ranker_copy))


def test_a_missing_file_is_named(ranker_copy: Path) -> None:
    (ranker_copy / "model.pt2").unlink()
    with pytest.raises(ArtifactError, match=r"model\.pt2 is missing \(listed in the manifest\)"):
        verify_files(ranker_copy, read_manifest(ranker_copy))


def test_a_version_without_manifest_is_incomplete(ranker_copy: Path) -> None:
    (ranker_copy / "manifest.json").unlink()
    with pytest.raises(
        ArtifactError, match=r"manifest\.json is missing: the version is incomplete"
    ):
        read_manifest(ranker_copy)


def test_a_truncated_manifest_is_half_written(ranker_copy: Path) -> None:
    manifest = ranker_copy / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=r"manifest\.json is not valid JSON") as caught:
        read_manifest(ranker_copy)
    assert "half-written" in caught.value.message
    assert str(manifest) in caught.value.message


def test_a_manifest_listing_files_outside_the_version_is_refused(ranker_copy: Path) -> None:
    manifest = ranker_copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"golden.pt"', '"../../golden.pt"'))
    with pytest.raises(ArtifactError, match="outside the version directory"):
        verify_files(ranker_copy, read_manifest(ranker_copy))
