"""verify_version replays golden examples and catches outputs beyond tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchrig.errors import ArtifactError
from torchrig.packaging import PackedVersion, verify_version
from torchrig.packaging.files import sha256_of


def perturb_golden(version_dir: Path, output: str, delta: float) -> None:
    """Add `delta` to one stored golden output and re-sign the file in the manifest, so that
    only the tolerance check can notice."""
    golden_path = version_dir / "golden.pt"
    golden = torch.load(golden_path, weights_only=True)
    key = f"0/outputs/{output}"
    golden[key] = golden[key] + delta
    torch.save(golden, golden_path)
    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:
        if entry["path"] == "golden.pt":
            entry["sha256"] = sha256_of(golden_path)
            entry["size"] = golden_path.stat().st_size
    manifest_path.write_text(json.dumps(manifest))


def test_a_fresh_version_passes(packed_ranker: PackedVersion) -> None:
    report = verify_version(packed_ranker.path)
    assert report.passed
    assert (report.model, report.version, report.device, report.examples) == (
        "ranker",
        1,
        "cpu",
        3,
    )
    (check,) = report.outputs
    assert check.name == "probability"
    assert check.passed
    assert check.max_abs_err <= check.atol


def test_a_perturbation_within_tolerance_passes(ranker_copy: Path) -> None:
    perturb_golden(ranker_copy, "probability", 1e-7)
    report = verify_version(ranker_copy)
    assert report.passed
    assert 0 < report.outputs[0].max_abs_err < 1e-5


def test_a_perturbation_beyond_tolerance_fails_naming_the_output(ranker_copy: Path) -> None:
    perturb_golden(ranker_copy, "probability", 0.01)
    report = verify_version(ranker_copy)
    assert not report.passed
    (check,) = report.outputs
    assert check.name == "probability"
    assert not check.passed
    assert check.max_abs_err == pytest.approx(0.01, rel=1e-3)
    assert check.max_rel_err > 0.01


def test_an_unavailable_device_is_a_clear_error(packed_ranker: PackedVersion) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    with pytest.raises(ArtifactError, match="CUDA is not available here"):
        verify_version(packed_ranker.path, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_golden_examples_replay_on_a_gpu(packed_ranker: PackedVersion) -> None:
    report = verify_version(packed_ranker.path, device="cuda")
    assert report.device in {"cuda", "cuda:0"}
    assert report.passed, report
