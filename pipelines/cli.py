"""``interest``: one entry point for every stage.

Each group of subcommands is a module of ``pipelines/commands/`` with ``register(subparsers)``; this file only
lists those modules. The commands are thin: they parse flags and call the stage libraries (``preprocessing``,
``trainer``, ``release``) and the runners of this package. Exit codes: 0 ok, 2 usage or config error (one line naming the flag or field and what is
allowed), 1 failure. Arguments after a bare ``--`` are passed through untouched (e.g. Beam pipeline options)
as ``args.passthrough``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core.configs import ConfigError

# Modules that add subcommands, in the order `interest --help` lists them.
COMMAND_MODULES = (
    "pipelines.commands.data",
    "pipelines.commands.preprocess",
    "pipelines.commands.presets",
    "pipelines.commands.grids",
    "pipelines.commands.train",
    "pipelines.commands.tune",
    "pipelines.commands.release",
    "pipelines.commands.run",
    "pipelines.commands.doctor",
)


class UsageError(ConfigError):
    """A command-line value is invalid; exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interest",
        description="Train, compare and ship Transformer user-interest models as a Kubeflow Pipelines DAG.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        result = args.func(args)
    except ConfigError as exc:
        print(f"interest {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interest {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one clear line, exit 1
        if args.verbose:
            raise
        print(f"interest {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
