"""The `torchrig` command line: a thin layer that parses, calls one function, renders.

Subcommands live one per module and are imported only when invoked, so
`torchrig --help` does not import torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from torchrig import __version__
from torchrig.errors import TorchrigError

# name -> (module, attribute, one-line help shown by `torchrig --help`)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": (
        "torchrig.cli.doctor",
        "doctor",
        "Prove this machine can run its PyTorch build on its GPUs; name cause and fix.",
    ),
    "env": (
        "torchrig.cli.env",
        "env",
        "Fingerprint environments (snapshot) and judge the drift between two (diff, check).",
    ),
    "compat": (
        "torchrig.cli.compat",
        "compat",
        "Ask the knowledge base: torch build, CUDA, architectures, driver, GPU.",
    ),
    "serve": (
        "torchrig.cli.serve",
        "serve",
        "Serve a model repository over the Open Inference Protocol (V2); --demo to try it.",
    ),
    "pack": (
        "torchrig.cli.pack",
        "pack",
        "Turn a PyTorch module or TorchScript file into a versioned model artifact.",
    ),
    "verify": (
        "torchrig.cli.verify",
        "verify",
        "Replay a model repository's golden examples here; fail past tolerance.",
    ),
    "image": (
        "torchrig.cli.image",
        "image",
        "Render, lock, tag and build the standard PyTorch-CUDA images (runtime, dev, serve).",
    ),
    "bench": (
        "torchrig.cli.bench",
        "bench",
        "Load-test any V2 server (closed or open loop); time a model's in-process ceiling.",
    ),
    "deploy": (
        "torchrig.cli.deploy",
        "deploy",
        "Render Kubernetes/KServe manifests, alerting rules and a Grafana dashboard.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command = getattr(module, entry[1])
        if not isinstance(command, click.Command):  # pragma: no cover - programming error
            raise TypeError(f"{entry[0]}.{entry[1]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="torchrig")
def cli() -> None:
    """torchrig: the PyTorch-CUDA runtime platform teams trust."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; a `TorchrigError` prints its message and exits with its code."""
    try:
        outcome = cli.main(args=argv, prog_name="torchrig", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TorchrigError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    # without standalone mode click returns ctx.exit()'s code instead of exiting
    sys.exit(outcome if isinstance(outcome, int) else 0)
