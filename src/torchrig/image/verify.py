"""`torchrig image test`: start a built image and check, from outside, what it promises.

Every flavour: it runs as the non-root UID, its venv is not writable by that user, the
installed distributions equal `constraints.txt`, torch is the labelled build. serve: the
server answers V2 infer from the host on the published port, the HEALTHCHECK command
fails before ready and passes after, the doctor entrypoint gates the start on a GPU, and
the pod spec of `torchrig deploy k8s` runs in the image and becomes ready. dev: sshd
takes the key and refuses a password and root, SSH sessions get the image's environment,
JupyterLab answers with its token and refuses without it.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from torchrig.image.container import ContainerError, Engineer, RunOptions, poll
from torchrig.image.render import UID

Status = Literal["pass", "fail", "skip"]
SERVE_PORT = 8000
SSH_PORT = 2222
JUPYTER_PORT = 8888
READY_TIMEOUT_S = 180.0


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One row of the report: which promise, whether it held, and what was seen."""

    check: str
    status: Status
    detail: str


@dataclasses.dataclass(frozen=True)
class TestPlan:
    """What to test: the image, its labels, and the inputs the user gave."""

    image: str
    flavour: str
    torch: str
    variant: str
    user: str
    model_repo: Path | None = None
    gpu_on_host: bool = False
    ready_timeout_s: float = READY_TIMEOUT_S


Check = Callable[[Engineer, TestPlan], Iterator[CheckResult]]


def http_status(url: str, *, method: str = "GET", body: bytes | None = None) -> int:
    """The HTTP status of one request (0 when nothing answered)."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def http_json(url: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET, or of a POST when `payload` is given."""
    body = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def _until_ok(runner: Engineer, container: str, url: str, timeout_s: float) -> bool:
    """Whether `url` answers 200 within `timeout_s`, while the container still runs."""
    return poll(
        lambda: http_status(url) == 200,
        timeout_s=timeout_s,
        while_true=lambda: runner.running(container),
    )


# -- every flavour ---------------------------------------------------------------------------


def check_common(runner: Engineer, plan: TestPlan) -> Iterator[CheckResult]:
    probe = RunOptions(entrypoint="/bin/sh", command=("-c", _COMMON_PROBE))
    result = runner.run_once(plan.image, probe)
    lines = dict(line.split("=", 1) for line in result.out.splitlines() if "=" in line)
    uid = lines.get("uid", "?")
    yield CheckResult(
        "user.non_root",
        "pass" if uid == str(UID) and plan.user.split(":")[0] == str(UID) else "fail",
        f"image USER {plan.user or '(none)'}, id -u in the container: {uid}",
    )
    writable = lines.get("venv_writable", "?")
    yield CheckResult(
        "venv.read_only",
        "pass" if writable == "no" else "fail",
        "/opt/venv is not writable by the image user"
        if writable == "no"
        else f"/opt/venv writable by UID {uid}: {writable}",
    )
    pins = runner.run_once(
        plan.image,
        RunOptions(
            entrypoint="/bin/sh",
            command=(
                "-c",
                "pip check && python /opt/torchrig/verify_pins.py "
                "/opt/torchrig/constraints.txt && echo pins-ok",
            ),
        ),
    )
    yield CheckResult(
        "pins.constraints",
        "pass" if pins.code == 0 and "pins-ok" in pins.out else "fail",
        "pip check passes and every distribution is its constraints.txt pin"
        if pins.code == 0
        else pins.text[-400:],
    )
    torch_seen = lines.get("torch", "?")
    wanted = f"{plan.torch}+{plan.variant}"
    ok = torch_seen in (wanted, plan.torch) and result.code == 0
    yield CheckResult(
        "torch.build",
        "pass" if ok else "fail",
        f"import torch: {torch_seen} (label: {wanted})" if result.code == 0 else result.text[-300:],
    )


_COMMON_PROBE = (
    'echo "uid=$(id -u)"; '
    "if touch /opt/venv/.torchrig-write-probe 2>/dev/null; then echo venv_writable=yes; "
    "else echo venv_writable=no; fi; "
    "python -c 'import torch; print(\"torch=\" + torch.__version__)'"
)


# -- serve ------------------------------------------------------------------------------------


def _first_model(repo: Path) -> str | None:
    for child in sorted(repo.iterdir()):
        if child.is_dir() and any(v.is_dir() and v.name.isdigit() for v in child.iterdir()):
            return child.name
    return None


def _zeros_request(metadata: dict[str, Any]) -> dict[str, Any]:
    """A V2 request of zeros shaped by the model's metadata (each -1 as 1)."""
    inputs = []
    for spec in metadata.get("inputs", []):
        shape = [1 if dim == -1 else int(dim) for dim in spec["shape"]]
        count = 1
        for dim in shape:
            count *= dim
        zero: Any = False if spec["datatype"] == "BOOL" else 0
        inputs.append(
            {
                "name": spec["name"],
                "shape": shape,
                "datatype": spec["datatype"],
                "data": [zero] * count,
            }
        )
    return {"inputs": inputs}


def _serve_options(plan: TestPlan, *env: tuple[str, str]) -> RunOptions:
    volumes = (f"{plan.model_repo}:/models:ro",) if plan.model_repo else ()
    return RunOptions(env=env, publish=(SERVE_PORT,), volumes=volumes, shm_size="1g")


def check_serve(runner: Engineer, plan: TestPlan) -> Iterator[CheckResult]:
    yield from _check_doctor_gate(runner, plan)
    if plan.model_repo is None:
        yield CheckResult("serve.infer", "skip", "no model repository to serve")
        return
    gpu_env = () if plan.gpu_on_host else (("TORCHRIG_DOCTOR_REQUIRE_GPU", "false"),)
    healthcheck = _healthcheck_command(runner, plan)
    if healthcheck is None:
        yield CheckResult("serve.healthcheck", "fail", "the image has no HEALTHCHECK command")
        healthcheck = ["/bin/false"]
    container = runner.start(plan.image, _serve_options(plan, *gpu_env))
    before = runner.exec(container, *healthcheck)
    yield CheckResult(
        "serve.healthcheck_before_ready",
        "pass" if before.code != 0 else "fail",
        f"HEALTHCHECK exit {before.code} right after start: {before.text[-160:] or '(no output)'}",
    )
    port = runner.port(container, SERVE_PORT)
    base = f"http://127.0.0.1:{port}"
    ready = _until_ok(runner, container, f"{base}/v2/health/ready", plan.ready_timeout_s)
    if not ready:
        yield CheckResult(
            "serve.infer",
            "fail",
            "never ready from the host on the published "
            f"port {port}: {runner.logs(container)[-400:]}",
        )
        return
    model = _first_model(plan.model_repo)
    if model is None:
        yield CheckResult("serve.infer", "skip", f"{plan.model_repo} holds no model version")
    else:
        status, metadata = http_json(f"{base}/v2/models/{model}")
        answer_status, answer = (
            http_json(f"{base}/v2/models/{model}/infer", _zeros_request(metadata))
            if status == 200
            else (status, metadata)
        )
        outputs = answer.get("outputs", []) if isinstance(answer, dict) else []
        yield CheckResult(
            "serve.infer",
            "pass" if answer_status == 200 and outputs else "fail",
            f"POST {base}/v2/models/{model}/infer from the host: {answer_status}, outputs "
            f"{[o.get('name') for o in outputs]}"
            if answer_status == 200
            else f"{answer_status}: {str(answer)[:300]}",
        )
    after = runner.exec(container, *healthcheck)
    yield CheckResult(
        "serve.healthcheck_after_ready",
        "pass" if after.code == 0 else "fail",
        f"HEALTHCHECK exit {after.code} once ready"
        + (f": {after.text[-200:]}" if after.code else ""),
    )
    runner.remove(container)
    yield from _check_pod_spec(runner, plan)


def _healthcheck_command(runner: Engineer, plan: TestPlan) -> list[str] | None:
    """The image's HEALTHCHECK test as an argv (docker keeps it in Config, podman at the top)."""
    found = runner.inspect_image(plan.image)
    config = found.get("Config") or {}
    healthcheck = config.get("Healthcheck") or found.get("Healthcheck") or {}
    test = healthcheck.get("Test") or []
    if test and test[0] == "CMD":
        return list(test[1:])
    if test and test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return None


def _check_doctor_gate(runner: Engineer, plan: TestPlan) -> Iterator[CheckResult]:
    """The entrypoint runs the doctor first: without a GPU a CUDA image stops with exit 2
    unless TORCHRIG_DOCTOR_REQUIRE_GPU=false; a CPU image starts without one."""
    entry = RunOptions(command=("true",))
    default = runner.run_once(plan.image, entry)
    lifted = runner.run_once(
        plan.image, dataclasses.replace(entry, env=(("TORCHRIG_DOCTOR_REQUIRE_GPU", "false"),))
    )
    required = runner.run_once(
        plan.image, dataclasses.replace(entry, env=(("TORCHRIG_DOCTOR_REQUIRE_GPU", "true"),))
    )
    if plan.gpu_on_host:
        yield CheckResult(
            "serve.doctor_gate",
            "skip",
            "this host has a GPU: the no-GPU refusal cannot be observed here",
        )
        return
    refused = required.code == 2 and "doctor failed" in required.err
    if plan.variant == "cpu":
        ok = default.code == 0 and lifted.code == 0 and refused
        detail = (
            f"CPU image starts without a GPU (exit {default.code}); with "
            f"TORCHRIG_DOCTOR_REQUIRE_GPU=true it refuses (exit {required.code})"
        )
    else:
        ok = default.code == 2 and "doctor failed" in default.err and lifted.code == 0
        detail = (
            f"no GPU: the entrypoint refuses (exit {default.code}); with "
            f"TORCHRIG_DOCTOR_REQUIRE_GPU=false it starts (exit {lifted.code})"
        )
    if not ok:
        detail += f"; output: {(default.err or required.err)[-300:]}"
    yield CheckResult("serve.doctor_gate", "pass" if ok else "fail", detail)


def _pod_run_options(
    container: dict[str, Any], pod: dict[str, Any], token_dir: Path, plan: TestPlan
) -> tuple[RunOptions, list[str]]:
    """The engine's equivalent of the pod's container: user, read-only root, mounts, env."""
    lifted: list[str] = []
    env = []
    for item in container.get("env", []):
        name, value = item["name"], str(item.get("value", ""))
        if name.endswith("REQUIRE_GPU") and value == "true" and not plan.gpu_on_host:
            value = "false"
            lifted.append(name)
        env.append((name, value))
    volumes_by_name = {volume["name"]: volume for volume in pod.get("volumes", [])}
    tmpfs, volumes, shm = [], [], None
    for mount in container.get("volumeMounts", []):
        volume = volumes_by_name[mount["name"]]
        path = mount["mountPath"]
        if "secret" in volume:
            volumes.append(f"{token_dir}:{path}:ro")
        elif "persistentVolumeClaim" in volume and plan.model_repo is not None:
            # the model PVC: the test's repository, bind-mounted read-only in its place
            volumes.append(f"{plan.model_repo}:{path}:ro")
        elif path == "/dev/shm":
            shm = "1g"
        elif "emptyDir" in volume:
            tmpfs.append(f"{path}:rw,mode=1777")
    args = [str(arg) for arg in container.get("args", [])]
    repo = args[-1] if args and args[-1].startswith("/") else None
    mounted = any(volume.endswith(f":{repo}:ro") for volume in volumes)
    if repo and plan.model_repo is not None and not mounted:
        volumes.append(f"{plan.model_repo}:{repo}:ro")
    security = container.get("securityContext", {})
    user = f"{security.get('runAsUser', UID)}:{security.get('runAsGroup', UID)}"
    options = RunOptions(
        env=tuple(env),
        publish=tuple(int(p["containerPort"]) for p in container.get("ports", [])),
        volumes=tuple(volumes),
        tmpfs=tuple(tmpfs),
        user=user,
        read_only=bool(security.get("readOnlyRootFilesystem")),
        drop_capabilities="ALL" in security.get("capabilities", {}).get("drop", []),
        shm_size=shm,
        command=tuple(args),
    )
    return options, lifted


def _check_pod_spec(runner: Engineer, plan: TestPlan) -> Iterator[CheckResult]:
    from torchrig.deploy.k8s import deployment
    from torchrig.deploy.spec import DeploySpec

    spec = DeploySpec.create(
        name="torchrig-image-test", image=plan.image, model_volume="pvc:torchrig-image-test"
    )
    pod = deployment(spec)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    with tempfile.TemporaryDirectory(prefix="torchrig-pod-") as tmp:
        token_dir = Path(tmp)
        token_file = token_dir / "token"
        token_file.write_text(secrets.token_hex(16), encoding="utf-8")
        token_file.chmod(0o644)  # the Secret's 0440 with fsGroup; here any reader
        token_dir.chmod(0o755)
        options, lifted = _pod_run_options(container, pod, token_dir, plan)
        started = runner.start(plan.image, options)
        probe = container["readinessProbe"]["httpGet"]["path"]
        port = runner.port(started, int(container["ports"][0]["containerPort"]))
        ready = _until_ok(runner, started, f"http://127.0.0.1:{port}{probe}", plan.ready_timeout_s)
        live = http_status(
            f"http://127.0.0.1:{port}{container['livenessProbe']['httpGet']['path']}"
        )
        note = f" (no GPU here: {', '.join(lifted)} set to false)" if lifted else ""
        detail = (
            f"deploy k8s container (user {options.user}, read-only root, capabilities dropped, "
            f"{len(options.tmpfs)} emptyDirs, token file, args {' '.join(options.command)}) "
            f"ready on {probe}, live {live}{note}"
        )
        if not ready:
            detail = f"pod spec never ready on {probe}: {runner.logs(started)[-400:]}"
        runner.remove(started)
    yield CheckResult("serve.pod_spec", "pass" if ready and live == 200 else "fail", detail)


# -- dev --------------------------------------------------------------------------------------


def _ssh(
    port: int, key: Path, user: str, command: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        *extra,
        f"{user}@127.0.0.1",
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def check_dev(runner: Engineer, plan: TestPlan) -> Iterator[CheckResult]:
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        yield CheckResult("dev.ssh", "skip", "no ssh / ssh-keygen client on this host")
        yield from _check_jupyter(runner, plan)
        return
    with tempfile.TemporaryDirectory(prefix="torchrig-ssh-") as tmp:
        key = Path(tmp) / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
        public = key.with_suffix(".pub").read_text(encoding="utf-8").strip()
        # mounted: a file owned by another UID with a loose mode, as a bind mount from a host
        mounted = Path(tmp) / "authorized_keys"
        mounted.write_text(public + "\n", encoding="utf-8")
        mounted.chmod(0o644)
        Path(tmp).chmod(0o755)
        yield from _check_ssh_with(
            runner,
            plan,
            key,
            "mounted file",
            RunOptions(
                publish=(SSH_PORT,),
                volumes=(f"{mounted}:/etc/torchrig/ssh/authorized_keys:ro",),
                env=(("TORCHRIG_PROBE", "from-the-container"),),
                command=("sleep", "600"),
            ),
            full=True,
        )
        yield from _check_ssh_with(
            runner,
            plan,
            key,
            "TORCHRIG_SSH_AUTHORIZED_KEYS",
            RunOptions(
                publish=(SSH_PORT,),
                env=(("TORCHRIG_SSH_AUTHORIZED_KEYS", public),),
                command=("sleep", "600"),
            ),
            full=False,
        )
    yield from _check_jupyter(runner, plan)


def _check_ssh_with(
    runner: Engineer, plan: TestPlan, key: Path, how: str, options: RunOptions, *, full: bool
) -> Iterator[CheckResult]:
    container = runner.start(plan.image, options)
    port = runner.port(container, SSH_PORT)
    probe = (
        "python -c 'import sys, torch; print(sys.executable, torch.__version__)'; "
        'echo "PATH=$PATH"; echo "PROBE=${TORCHRIG_PROBE:-}"'
    )
    poll(lambda: _ssh(port, key, "torchrig", "true").returncode == 0, timeout_s=30)
    answer = _ssh(port, key, "torchrig", probe)
    ok = answer.returncode == 0 and "/opt/venv/bin/python" in answer.stdout
    yield CheckResult(
        f"dev.ssh_key ({how})",
        "pass" if ok else "fail",
        f"ssh torchrig@ with the key runs the venv's torch: {answer.stdout.split()[:2]}"
        if ok
        else f"exit {answer.returncode}: {(answer.stderr or answer.stdout)[-300:]} "
        f"{runner.exec(container, 'cat', '/home/torchrig/.torchrig-sshd/sshd.log').text[-300:]}",
    )
    if not full:
        runner.remove(container)
        return
    env_ok = "PATH=/opt/venv/bin" in answer.stdout and "PROBE=from-the-container" in answer.stdout
    yield CheckResult(
        "dev.ssh_environment",
        "pass" if env_ok else "fail",
        "SSH sessions get the container's PATH (venv first) and variables"
        if env_ok
        else f"session environment: {answer.stdout[-300:]}",
    )
    password = _ssh(
        port,
        key,
        "torchrig",
        "true",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    )
    yield CheckResult(
        "dev.ssh_password_refused",
        "pass" if password.returncode != 0 and "(publickey)" in password.stderr else "fail",
        f"without the key: {password.stderr.strip()[-200:]}",
    )
    root = _ssh(port, key, "root", "true")
    yield CheckResult(
        "dev.ssh_root_refused",
        "pass" if root.returncode != 0 else "fail",
        f"root with a valid key: {root.stderr.strip()[-200:] or 'accepted'}",
    )
    runner.remove(container)


def _check_jupyter(runner: Engineer, plan: TestPlan) -> Iterator[CheckResult]:
    token = secrets.token_hex(16)
    container = runner.start(
        plan.image, RunOptions(publish=(JUPYTER_PORT,), env=(("JUPYTER_TOKEN", token),))
    )
    port = runner.port(container, JUPYTER_PORT)
    base = f"http://127.0.0.1:{port}/api/status"
    up = _until_ok(runner, container, f"{base}?token={token}", plan.ready_timeout_s)
    without = http_status(base)
    wrong = http_status(f"{base}?token=not-{token}")
    ok = up and without in (401, 403) and wrong in (401, 403)
    yield CheckResult(
        "dev.jupyter_token",
        "pass" if ok else "fail",
        f"/api/status with the token: {'200' if up else 'no answer'}; without: {without}; "
        f"wrong token: {wrong}" + ("" if up else f"; logs: {runner.logs(container)[-300:]}"),
    )
    runner.remove(container)


CHECKS: dict[str, list[Check]] = {
    "runtime": [check_common],
    "serve": [check_common, check_serve],
    "dev": [check_common, check_dev],
}


def plan_for(
    runner: Engineer,
    image: str,
    model_repo: Path | None,
    *,
    gpu_on_host: bool,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> TestPlan:
    """The plan for `image`, from the labels `torchrig image render` gave it."""
    config = runner.inspect_image(image).get("Config", {})
    labels = config.get("Labels") or {}
    flavour = labels.get("io.torchrig.flavour")
    if flavour not in CHECKS:
        raise ContainerError(
            f"{image} has no io.torchrig.flavour label (runtime, dev or serve): it was not "
            "built from a context that `torchrig image render` wrote"
        )
    return TestPlan(
        image=image,
        flavour=flavour,
        torch=labels.get("io.torchrig.torch", "?"),
        variant=labels.get("io.torchrig.torch-variant", "?"),
        user=str(config.get("User") or ""),
        model_repo=model_repo,
        gpu_on_host=gpu_on_host,
        ready_timeout_s=ready_timeout_s,
    )


def make_demo_repository(runner: Engineer, image: str, directory: Path) -> Path:
    """Pack the demo models with the image's own torch into `directory` (a host folder)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)  # the image's user writes into it through the bind mount
    result = runner.run_once(
        image,
        RunOptions(
            entrypoint="python",
            volumes=(f"{directory}:/repository",),
            command=(
                "-c",
                "from torchrig.demo.repository import build_demo_repository; "
                "build_demo_repository('/repository')",
            ),
        ),
        timeout_s=600,
    )
    if result.code != 0:
        raise ContainerError(f"packing the demo models in {image} failed: {result.text[-400:]}")
    return directory


def run_checks(runner: Engineer, plan: TestPlan) -> list[CheckResult]:
    """Every check of the plan's flavour, in order."""
    results: list[CheckResult] = []
    for check in CHECKS[plan.flavour]:
        results.extend(check(runner, plan))
    return results
