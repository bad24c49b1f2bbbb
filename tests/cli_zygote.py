"""A process that has imported torch and torchrig's CLI once, then forks one child per
`torchrig` command it is sent (test helper; tests/cli_runs.py drives it).

Each child is a real process, as `python -m torchrig ARGS` would be: its own working
directory, environment, stdin (/dev/null), stdout and stderr (files, at the descriptor
level, so whatever writes to them is caught) and exit status. It only skips the seconds
that importing torch takes in every fresh interpreter. Requests and answers are JSON
lines on this process's stdin and stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import traceback

import torch  # noqa: F401  (imported once here, instead of in each child)

import torchrig
from torchrig.cli import main

MAIN = os.path.join(os.path.dirname(torchrig.__file__), "__main__.py")  # sys.argv[0] of -m


def _exit_status(code: object) -> int:
    """What the interpreter makes of SystemExit(code) (a str is printed, exit 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(request: dict[str, object]) -> None:
    """Become `python -m torchrig ARGV` in the request's directory and environment."""
    status = 1
    try:
        cwd = str(request["cwd"])
        os.chdir(cwd)
        sys.path[0] = cwd  # as `python -m` does: modules beside the user import
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(str(request["stdout"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(str(request["stderr"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(stdin, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        sys.argv = [MAIN, *argv]
        try:
            main(argv)
            status = 0
        except SystemExit as exc:
            status = _exit_status(exc.code)
        except BaseException:
            traceback.print_exc()
            status = 1
        atexit._run_exitfuncs()  # what a normal interpreter exit runs
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def serve() -> None:
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        replies.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)  # -N for a signal, as subprocess says
        replies.write(json.dumps({"returncode": code}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
