"""`torchrig doctor --explain CHECK_ID`: what a check judges, its facts, its sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from torchrig.doctor import CHECKS
from torchrig.doctor.explain import explain_check
from torchrig.errors import UsageError


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    return subprocess.run(
        [sys.executable, "-m", "torchrig", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_every_check_explains_its_facts_and_sources() -> None:
    for check in CHECKS:
        explanation = explain_check(check.id)
        assert explanation.judges == check.description
        assert explanation.facts, check.id
        for note in explanation.sources:
            assert note.source, (check.id, note.name)


def test_gpu_arch_names_torch_s_table_and_the_data_files() -> None:
    explanation = explain_check("gpu.arch")
    names = [note.name for note in explanation.sources]
    assert "torchrig/compat/data/torch_releases.json" in names
    assert "torchrig/compat/data/jetson.json" in names
    assert any("PYTORCH_RELEASES_CODE_CC" in note.source for note in explanation.sources)
    assert "torch.release_arch_table" in explanation.facts


def test_cuda_init_lists_torch_s_error_texts_with_their_source() -> None:
    notes = {note.name: note for note in explain_check("torch.cuda_init").sources}
    too_old = notes["error torch-driver-too-old"]
    assert "c10/cuda/CUDAFunctions.cpp" in too_old.source
    assert "driver.cuda" in too_old.detail
    assert notes["error driver-library-mismatch"].verified is False


def test_unknown_check_id_is_a_usage_error_listing_the_ids() -> None:
    with pytest.raises(UsageError, match=r"gpu\.arch"):
        explain_check("gpu.bogus")


def test_explain_from_the_command_line() -> None:
    proc = run("doctor", "--explain", "libs.shadowing")
    assert proc.returncode == 0, proc.stderr
    assert "LD_PRELOAD" in proc.stdout
    assert "sonames.json" in proc.stdout
    as_json = run("doctor", "--explain", "gpu.mig", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["id"] == "gpu.mig"
    bad = run("doctor", "--explain", "nope")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "unknown check id 'nope'" in bad.stderr
