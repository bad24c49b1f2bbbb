"""Only whitelisted variables reach a snapshot; secrets never do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from torchrig.facts import collect_snapshot
from torchrig.facts.environment import ENV_WHITELIST, is_whitelisted, whitelisted_env
from torchrig.facts.model import snapshot_to_json

SECRETS = {
    "HF_TOKEN": "hf_do_not_leak_4f1c2b",
    "AWS_SECRET_ACCESS_KEY": "aws_do_not_leak_9a8b7c",
    "NCCL_IB_TOKEN": "nccl_token_do_not_leak",
    "NCCL_SOCKET_PASSWORD": "nccl_password_do_not_leak",
    "NCCL_API_KEY": "nccl_key_do_not_leak",
}
KEPT = {
    "CUDA_VISIBLE_DEVICES": "0,1",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NCCL_DEBUG": "INFO",
    "NCCL_SOCKET_IFNAME": "eth0",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
}
DROPPED = {"HOME": "/root", "CUDA_VISIBLE_DEVICES_EXTRA": "x", "MY_NCCL_DEBUG": "INFO"}


def test_whitelisted_env_keeps_exact_names_and_nccl_prefix_only() -> None:
    environ = {**SECRETS, **KEPT, **DROPPED}

    assert whitelisted_env(environ) == dict(sorted(KEPT.items()))


def test_the_whitelist_holds_no_secret_looking_name() -> None:
    assert all(is_whitelisted(name) for name in ENV_WHITELIST)
    assert not any(is_whitelisted(name) for name in SECRETS)


def test_secrets_in_a_passed_environ_never_reach_the_snapshot() -> None:
    snapshot = collect_snapshot(environ={**os.environ, **SECRETS, **KEPT})
    data = snapshot_to_json(snapshot).decode()

    for name, value in SECRETS.items():
        assert name not in data
        assert value not in data
    for name, value in KEPT.items():
        assert snapshot.env[name] == value


def test_secrets_in_the_real_environment_never_reach_the_snapshot() -> None:
    script = (
        "import sys\n"
        "from torchrig.facts import collect_snapshot\n"
        "from torchrig.facts.model import snapshot_to_json\n"
        "sys.stdout.buffer.write(snapshot_to_json(collect_snapshot()))\n"
    )
    env = {**os.environ, **SECRETS, **KEPT}

    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, check=True, timeout=120
    )

    data = completed.stdout.decode()
    for name, value in SECRETS.items():
        assert name not in data
        assert value not in data
    assert json.loads(data)["env"]["NCCL_DEBUG"] == "INFO"
