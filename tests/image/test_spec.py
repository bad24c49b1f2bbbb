"""Validation against the knowledge base: refusals name the reason and the nearest choices."""

from __future__ import annotations

import pytest

from torchrig.errors import TorchrigError
from torchrig.image.spec import floor_meets, resolve_spec


def _refusal(**kwargs: object) -> str:
    with pytest.raises(TorchrigError) as exc:
        resolve_spec(**kwargs)  # type: ignore[arg-type]
    return exc.value.message


def test_default_is_pypi_variant_on_ubuntu_python() -> None:
    spec = resolve_spec(torch="2.9")
    assert (spec.torch_version, spec.variant, spec.cuda, spec.python) == (
        "2.9.1",
        "cu128",
        "12.8",
        "3.12",
    )
    assert spec.base_image == "nvidia/cuda:12.8.1-base-ubuntu24.04"
    assert spec.min_driver == "570.26"
    assert spec.uses_distro_python


def test_cuda_the_release_lacks_names_what_it_has_and_the_nearest() -> None:
    message = _refusal(torch="2.9.1", cuda="13.2")
    assert "torch 2.9.1 has no CUDA 13.2 build" in message
    assert "cu126, cu128, cu129 (experimental), cu130 (experimental)" in message
    assert "nearest: 13.0 (experimental: needs --allow-experimental)" in message
    assert "nearest stable: 12.8" in message


def test_driver_floor_below_the_toolkit_minimum_is_refused_with_choices() -> None:
    message = _refusal(torch="2.11.0", cuda="13.0", driver_floor="570")
    assert "needs driver >= 580.65.06" in message
    assert "R580 is the floor of any CUDA 13.x runtime" in message
    assert "with driver 570 use CUDA 12.8 (570.26), 12.6 (560.28.03)" in message


def test_driver_floor_that_runs_nothing_fully_says_what_to_raise_it_to() -> None:
    message = _refusal(torch="2.9.1", cuda="13.0", driver_floor="550", allow_experimental=True)
    assert "driver 550 fully runs no torch 2.9.1 build" in message
    assert "raise --driver-floor to >= 560.28.03 (CUDA 12.6) or >= 580.65.06" in message


def test_minor_version_compat_is_not_enough_and_says_why() -> None:
    message = _refusal(torch="2.9.1", cuda="12.9", driver_floor="570", allow_experimental=True)
    assert "only under minor-version compatibility (no PTX JIT" in message
    assert "use CUDA 12.8 (570.26)" in message


def test_driver_floor_as_branch_or_exact_version() -> None:
    assert floor_meets("570", "570.26")
    assert not floor_meets("570.10.0", "570.26")
    assert floor_meets("575.51.03", "575.51.03")
    assert not floor_meets("565", "570.26")
    assert resolve_spec(torch="2.9.1", cuda="12.8", driver_floor="570").driver_floor == "570"


def test_experimental_needs_the_flag() -> None:
    message = _refusal(torch="2.9.1", cuda="13.0")
    assert "experimental upstream; pass --allow-experimental" in message
    assert "or use CUDA 12.8 (stable)" in message
    assert resolve_spec(torch="2.9.1", cuda="13.0", allow_experimental=True).variant == "cu130"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"torch": "3.1"}, "not in the knowledge base"),
        ({"torch": "2.9.7"}, "known: 2.9.0, 2.9.1"),
        ({"torch": "2.12.0", "cuda": "12.9", "allow_experimental": True}, "use --torch 2.12.1"),
        ({"torch": "2.9.1+cu126", "cuda": "12.8"}, "give the CUDA once"),
        ({"torch": "2.9", "python": "3.9"}, "Python 3.9 is not offered"),
        ({"torch": "2.9", "flavour": "notebook"}, "unknown flavour"),
        ({"torch": "banana"}, "cannot parse torch version"),
        ({"torch": "2.9", "cuda": "twelve"}, "cannot parse CUDA version"),
        ({"torch": "2.9", "driver_floor": "r570"}, "cannot parse driver version"),
        ({"torch": "2.9", "base": "bad image ref"}, "not an image reference"),
    ],
)
def test_bad_input_is_refused(kwargs: dict[str, object], needle: str) -> None:
    assert needle in _refusal(**kwargs)


def test_local_version_names_the_variant() -> None:
    assert resolve_spec(torch="2.9.1+cu126").variant == "cu126"


def test_other_pythons_use_the_pinned_installer_and_base_can_be_chosen() -> None:
    spec = resolve_spec(torch="2.11", cuda="13.0", python="3.11", base_kind="cudnn-runtime")
    assert not spec.uses_distro_python
    assert spec.base_image == "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04"
    assert not spec.base_verified  # 13.0.2's tag is recorded as unverified
    custom = resolve_spec(torch="2.11", cuda="13.0", base="registry.example.com/cuda:13.0.2-ok")
    assert custom.base_image == "registry.example.com/cuda:13.0.2-ok"
