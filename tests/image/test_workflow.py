"""The users' CI workflow shipped with torchrig is well-formed GitHub Actions.

actionlint has no build on PyPI from its upstream that installs without fetching a binary
from GitHub, so the workflow is checked structurally here: valid YAML, the keys GitHub
requires, every action pinned, every expression closed, and the steps it promises.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from torchrig.image.render import template

STEP_KEYS = {
    "name",
    "id",
    "if",
    "uses",
    "run",
    "with",
    "env",
    "shell",
    "continue-on-error",
    "timeout-minutes",
    "working-directory",
}
JOB_KEYS = {
    "name",
    "needs",
    "runs-on",
    "steps",
    "strategy",
    "if",
    "env",
    "outputs",
    "permissions",
    "timeout-minutes",
    "container",
    "services",
    "defaults",
    "concurrency",
    "continue-on-error",
    "environment",
}


def workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(template("github-workflow.yml"))
    assert isinstance(loaded, dict)
    return loaded


def test_workflow_is_well_formed_github_actions() -> None:
    flow = workflow()
    assert flow.get("name")
    assert True in flow or "on" in flow  # YAML 1.1 reads a bare `on:` key as True
    jobs = flow["jobs"]
    assert jobs
    for job_id, job in jobs.items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", job_id), job_id
        assert set(job) <= JOB_KEYS, (job_id, set(job) - JOB_KEYS)
        assert "runs-on" in job, job_id
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in jobs, (job_id, need)
        for step in job["steps"]:
            assert set(step) <= STEP_KEYS, (job_id, set(step) - STEP_KEYS)
            assert ("uses" in step) != ("run" in step), (job_id, step)
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]), step["uses"]
    text = template("github-workflow.yml")
    assert text.count("${{") == text.count("}}")


def test_workflow_renders_builds_and_tests_on_a_gpu() -> None:
    text = template("github-workflow.yml")
    for needle in (
        "torchrig image matrix",
        "torchrig image lock",
        "torchrig image render",
        "torchrig image build",
        "--push",
        "doctor --deep --require-gpu",
        "--gpus all",
    ):
        assert needle in text
    assert "secrets.GITHUB_TOKEN" in text
    assert "build-arg" not in text
