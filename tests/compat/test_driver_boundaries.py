"""Driver boundaries generated from the driver data file, through every user-facing path.

For each CUDA toolkit in `cuda_drivers.json`: its exact minimum driver (full support), the
driver just below it, the exact minor-version floor of its major, and the driver just
below that floor. Each is judged by `torchrig compat check`, by the doctor (a `--from`
snapshot of an H100 node with that driver) and by `torchrig image tag --driver-floor`.
The expected answers come from the data and the documented rules, compared here with
plain integer tuples, not from the code under test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import torchrig.compat
from builders import node
from torchrig.cli import main
from torchrig.facts.model import snapshot_to_json

DATA = Path(torchrig.compat.__file__).parent / "data"
DRIVERS = json.loads((DATA / "cuda_drivers.json").read_text())
RELEASES = json.loads((DATA / "torch_releases.json").read_text())["releases"]
FLOORS = {entry["major"]: entry["floor"] for entry in DRIVERS["minor_compat"]}
GPU = "H100"  # sm_90 SASS in every build here: only the driver decides


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def compare(a: str, b: str) -> int:
    """-1, 0, 1 on versions padded with zeros (580 == 580.0.0)."""
    width = max(len(version(a)), len(version(b)))
    left = version(a) + (0,) * (width - len(version(a)))
    right = version(b) + (0,) * (width - len(version(b)))
    return (left > right) - (left < right)


def just_below(text: str) -> str:
    """The nearest driver version below `text` with as many components (570.26 -> 570.25)."""
    parts = list(version(text))
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] > 0:
            parts[index] -= 1
            for later in range(index + 1, len(parts)):
                parts[later] = 99
            return ".".join(str(p) for p in parts)
    raise AssertionError(f"nothing below {text}")


@dataclass(frozen=True)
class Case:
    cuda: str
    min_driver: str
    floor: str
    driver: str
    what: str  # "minimum", "below minimum", "floor", "below floor"
    release: str | None  # a torch version with a wheel for this CUDA, if one has
    experimental: bool

    @property
    def status(self) -> str:
        """ok at or above the minimum, minor-compat from the major's floor, else insufficient."""
        if compare(self.driver, self.min_driver) >= 0:
            return "ok"
        if compare(self.driver, self.floor) >= 0:
            return "minor-compat"
        return "insufficient"

    @property
    def image_accepts(self) -> bool:
        """--driver-floor must support the CUDA fully; a bare branch (570) stands for any
        driver of that branch, so it is compared by branch."""
        if "." not in self.driver:
            return int(self.driver) >= version(self.min_driver)[0]
        return self.status == "ok"

    @property
    def torch(self) -> str:
        assert self.release is not None
        return f"{self.release}+cu{self.cuda.replace('.', '')}"

    def __str__(self) -> str:
        return f"cuda{self.cuda}-{self.what.replace(' ', '-')}-{self.driver}"


def _release_for(cuda: str) -> tuple[str | None, bool]:
    variant = f"cu{cuda.replace('.', '')}"
    for release in RELEASES:
        for info in release["variants"]:
            if info["variant"] == variant:
                return release["patches"][-1], info["status"] == "experimental"
    return None, False  # a toolkit no torch release builds for (13.1): compat's API only


def cases() -> list[Case]:
    found: list[Case] = []
    for toolkit in DRIVERS["toolkits"]:
        cuda, minimum = toolkit["cuda"], toolkit["min_driver"]
        floor = FLOORS[int(cuda.split(".")[0])]
        release, experimental = _release_for(cuda)
        drivers = {
            "minimum": minimum,
            "below minimum": just_below(minimum),
            "floor": floor,
            "below floor": just_below(floor),
        }
        for what, driver in drivers.items():
            found.append(Case(cuda, minimum, floor, driver, what, release, experimental))
    return found


CASES = cases()
BUILT = [case for case in CASES if case.release is not None]  # a torch wheel to judge


def test_the_cases_cover_both_sides_of_every_boundary() -> None:
    """The generated cases are not vacuous: every toolkit has an ok, a minor-compat and an
    insufficient driver, and every major's floor is judged exactly at the floor."""
    by_cuda: dict[str, set[str]] = {}
    for case in CASES:
        by_cuda.setdefault(case.cuda, set()).add(case.status)
    assert set(by_cuda) == {t["cuda"] for t in DRIVERS["toolkits"]}
    assert all(statuses == {"ok", "minor-compat", "insufficient"} for statuses in by_cuda.values())
    at_floor = {c.cuda.split(".")[0] for c in CASES if c.what == "floor"}
    assert at_floor == {str(major) for major in FLOORS}
    # the case the issue names: 525.60.13 on CUDA 12.8 runs under minor-version compat
    (named,) = [c for c in CASES if c.cuda == "12.8" and c.driver == "525.60.13"]
    assert named.status == "minor-compat"
    assert {c.cuda for c in BUILT} >= {"12.6", "12.8", "13.0"}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_driver_support_at_the_boundary(case: Case) -> None:
    support = torchrig.compat.driver_support(case.cuda, case.driver)
    assert support.status == case.status, (case, support.message)
    assert support.min_driver == case.min_driver
    assert support.floor == case.floor


@pytest.fixture(autouse=True)
def _no_torchrig_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI runs in this process: settings from the caller's TORCHRIG_* variables
    (a CI job's TORCHRIG_DOCTOR_REQUIRE_GPU, say) must not change its verdicts."""
    for name in [n for n in os.environ if n.startswith("TORCHRIG_")]:
        monkeypatch.delenv(name)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`torchrig ARGV` in this process (the real click command): (exit code, out, err)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    captured = capsys.readouterr()
    code = exc.value.code
    assert isinstance(code, int), (argv, code)
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", BUILT, ids=str)
def test_compat_check_at_the_boundary(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "compat", "check", "--torch", case.torch, "--gpu", GPU, "--driver", case.driver,
        "--json",
    )  # fmt: skip
    report: dict[str, Any] = json.loads(out)
    (driver,) = [f for f in report["findings"] if f["topic"] == "driver"]
    expected = {"ok": "ok", "minor-compat": "warn", "insufficient": "fail"}[case.status]
    assert driver["status"] == expected, (case, driver["message"])
    assert code == (2 if expected == "fail" else 0), err
    if case.status == "minor-compat":
        assert "minor-version compatibility" in driver["message"]
        assert case.min_driver in driver["fix"]
    if case.status == "insufficient":
        assert f"below {case.floor}" in driver["message"]


@pytest.mark.parametrize("case", BUILT, ids=str)
def test_doctor_from_a_snapshot_at_the_boundary(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = node(torch=case.torch, gpu=GPU, driver=case.driver, driver_cuda=case.cuda)
    path = tmp_path / "node.json"
    path.write_bytes(snapshot_to_json(snapshot))
    code, out, err = run_cli(capsys, "doctor", "--from", str(path), "--json")
    report: dict[str, Any] = json.loads(out)
    (driver,) = [c for c in report["checks"] if c["id"] == "driver.cuda"]
    expected = {"ok": "ok", "minor-compat": "warn", "insufficient": "fail"}[case.status]
    assert driver["status"] == expected, (case, driver["message"])
    if expected == "fail":
        assert code == 2, err
        assert "error 35" in driver["message"]


@pytest.mark.parametrize("case", BUILT, ids=str)
def test_image_driver_floor_at_the_boundary(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    assert case.release is not None
    argv = ["image", "tag", "--torch", case.release, "--cuda", case.cuda]
    argv += ["--driver-floor", case.driver]
    if case.experimental:
        argv.append("--allow-experimental")
    code, out, err = run_cli(capsys, *argv)
    if case.image_accepts:
        assert code == 0, err
        assert f"{case.release}-cuda{case.cuda}-runtime" in out
    else:
        assert code == 2, out
        assert err.startswith("Error: ")
        assert f"needs driver >= {case.min_driver}" in err
        if case.status == "minor-compat":
            assert "only under minor-version compatibility" in err
