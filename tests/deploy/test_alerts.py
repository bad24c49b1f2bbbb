"""The alerting rules pass `promtool check rules`, and `promtool test rules` proves each
alert fires when it should and stays quiet when it should not."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from torchrig.deploy.monitoring import (
    ASSETS,
    RULES_FILE,
    alert_rules,
    dashboard_configmap,
    prometheus_rule,
    render_assets,
)
from torchrig.deploy.output import write_files

Validate = Callable[[dict[str, Any]], None]
UNIT_TESTS = Path(__file__).parent / "promtool" / "alerts.test.yml"
ALERTS = {
    "TorchrigScrapeFailing",
    "TorchrigMetricsAbsent",
    "TorchrigModelNotReady",
    "TorchrigHighErrorRate",
    "TorchrigQueueSaturated",
    "TorchrigLatencyP99High",
    "TorchrigGpuMemoryNearLimit",
}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def written(tmp_path: Path) -> Path:
    """The monitoring assets as `torchrig deploy monitoring -o` writes them."""
    write_files(tmp_path, {ASSETS[key]: text for key, text in render_assets().items()})
    return tmp_path


def test_the_alerts_the_issue_asks_for() -> None:
    rules = [rule for group in alert_rules()["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert "for" in rule


def test_promtool_check_rules(promtool: str, tmp_path: Path) -> None:
    directory = written(tmp_path)
    proc = run(promtool, "check", "rules", RULES_FILE, cwd=directory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout
    broken = directory / "broken.rules.yml"
    unbalanced = "sum(rate(torchrig_request_success_total[5m])"
    broken.write_text(f"groups:\n- name: x\n  rules:\n  - alert: X\n    expr: {unbalanced}\n")
    assert run(promtool, "check", "rules", broken.name, cwd=directory).returncode != 0


def test_promtool_unit_tests_cover_every_alert(promtool: str, tmp_path: Path) -> None:
    directory = written(tmp_path)
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    proc = run(promtool, "test", "rules", UNIT_TESTS.name, cwd=directory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    cases = yaml.safe_load(UNIT_TESTS.read_text())
    assert cases["rule_files"] == [RULES_FILE]
    fires, quiet = set(), set()
    for test in cases["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fires == ALERTS
    assert quiet == ALERTS


def test_promtool_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A rule that never fires (a threshold pushed out of reach) fails its unit test."""
    directory = written(tmp_path)
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    rules = directory / RULES_FILE
    rules.write_text(rules.read_text().replace("> 0.95", "> 1.5"))
    proc = run(promtool, "test", "rules", UNIT_TESTS.name, cwd=directory)
    assert proc.returncode != 0
    assert "TorchrigGpuMemoryNearLimit" in proc.stdout + proc.stderr


def test_kubernetes_wrappers_validate(validate_manifest: Validate) -> None:
    for namespace in (None, "monitoring"):
        rule = prometheus_rule(namespace)
        validate_manifest(rule)
        assert rule["spec"]["groups"] == alert_rules()["groups"]
        configmap = dashboard_configmap(namespace)
        validate_manifest(configmap)
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
