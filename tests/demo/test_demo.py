"""Demo models and the demo repository: deterministic, fast, packable, verifiable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from torchrig.demo import DemoRanker, TinyImageClassifier, build_demo_repository
from torchrig.errors import PackError
from torchrig.packaging import load_program, read_manifest, verify_version
from torchrig.repository.config import parse_config


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # how long this takes: python benchmarks/demo_build.py
    return build_demo_repository(tmp_path_factory.mktemp("demo") / "repo")


def test_ranker_is_deterministic_and_outputs_probabilities() -> None:
    dense, sparse = DemoRanker.example_inputs(17)
    with torch.no_grad():
        a, b = DemoRanker().eval()(dense, sparse), DemoRanker().eval()(dense, sparse)
        other = DemoRanker(seed=1).eval()(dense, sparse)
    assert a.shape == (17, 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, other)
    assert bool(((a > 0) & (a < 1)).all())
    assert int(sparse.min()) == 0
    assert int(sparse.max()) == 999


def test_classifier_outputs_logits() -> None:
    (image,) = TinyImageClassifier.example_inputs(3)
    with torch.no_grad():
        logits = TinyImageClassifier().eval()(image)
    assert logits.shape == (3, 10)


def test_demo_repository_has_both_models_with_configs(demo_repo: Path) -> None:
    assert sorted(p.name for p in demo_repo.iterdir()) == ["classifier", "ranker"]
    ranker_config = parse_config((demo_repo / "ranker" / "config.toml").read_text())
    assert ranker_config.batching.max_batch_size == 64
    assert ranker_config.batching.max_queue_delay_ms == 0.0  # adaptive: no wait when idle
    classifier_config = parse_config((demo_repo / "classifier" / "config.toml").read_text())
    assert classifier_config.batching.max_batch_size == 32
    ranker = read_manifest(demo_repo / "ranker" / "1")
    assert [s.name for s in ranker.inputs] == ["dense", "sparse"]
    assert [s.name for s in ranker.outputs] == ["probability"]
    assert ranker.input_ranges == {"sparse": [0, 999]}  # checked per request
    classifier = read_manifest(demo_repo / "classifier" / "1")
    assert [(s.name, s.shape) for s in classifier.inputs] == [("image", [-1, 3, 64, 64])]
    assert [(s.name, s.shape) for s in classifier.outputs] == [("logits", [-1, 10])]


@pytest.mark.parametrize("model", ["ranker", "classifier"])
def test_demo_versions_verify_and_serve_any_batch(demo_repo: Path, model: str) -> None:
    version = demo_repo / model / "1"
    assert verify_version(version).passed
    manifest = read_manifest(version)
    program = load_program(version, manifest)
    inputs = {
        "ranker": dict(zip(["dense", "sparse"], DemoRanker.example_inputs(33), strict=True)),
        "classifier": {"image": TinyImageClassifier.example_inputs(33)[0]},
    }[model]
    with torch.inference_mode():
        outputs = program(inputs)
    assert next(iter(outputs.values())).shape[0] == 33


HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
# Not a test dependency: the only torchvision for torch 2.13 on PyPI (0.28.0) is built
# against the CUDA torch and does not import beside the CPU wheel the dev extra pins
# ("operator torchvision::nms does not exist"), and no CPU build is reachable from CI.
NO_TORCHVISION = "torchvision is not installed (no CPU build for torch 2.13 on PyPI)"


def test_torchvision_models_without_torchvision_name_the_fix(tmp_path: Path) -> None:
    if HAS_TORCHVISION:
        pytest.skip("torchvision is installed: the next test packs its models")
    with pytest.raises(PackError, match=r"needs torchvision; install the build that matches"):
        build_demo_repository(tmp_path / "repo", include_torchvision=True)


@pytest.mark.skipif(not HAS_TORCHVISION, reason=NO_TORCHVISION)
def test_torchvision_models_pack_when_asked(tmp_path: Path) -> None:
    repo = build_demo_repository(tmp_path / "repo", include_torchvision=True)
    assert {"resnet50", "vit_b_16"} <= {p.name for p in repo.iterdir()}
    assert read_manifest(repo / "resnet50" / "1").outputs[0].shape == [-1, 1000]
