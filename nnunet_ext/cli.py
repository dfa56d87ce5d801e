"""The ``nnunet-ext`` command: what nnU-Net has no command for.

Training and prediction use nnU-Net's own commands (``nnUNetv2_train ... -tr nnUNetTrainerSegFormer3DVariant``).
Each subcommand is a module of ``nnunet_ext.commands`` with the same name, wired here the same way.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from types import ModuleType

from nnunet_ext import __version__

DESCRIPTION = ("Published tumour-segmentation architectures as nnU-Net v2 trainers: what nnU-Net has no command for "
               "(planning for a network's own memory, cross-validation and benchmarking of several trainers, RCC "
               "detection, synthetic data, a demo). Training and prediction use nnU-Net's own commands.")

EXIT_PREEMPTED = 75  # as nnunet_ext.trainers.preemption.EXIT_PREEMPTED, which cannot be imported here (torch)
EXIT_STATUS = {0: "done", 1: "a fold or case failed", 2: "usage or input error (the message says what to fix)",
               EXIT_PREEMPTED: "stopped by a signal; run the same command again to resume",
               143: "stopped by SIGTERM; run the same command again to add the cases not done (finished ones are "
                    "kept)"}


def help_text(module: ModuleType) -> tuple[str, str]:
    """A subcommand module's one-line summary (for ``nnunet-ext --help``) and the text its own ``--help`` opens with:
    the module docstring (what it does and writes) and its exit statuses (``EXIT_STATUSES``, default 0 and 2)."""
    summary, _, description = (module.__doc__ or module.__name__).strip().partition("\n\n")  # none under python -OO
    statuses = "\n".join(f"  {code:>3}  {EXIT_STATUS[code]}" for code in getattr(module, "EXIT_STATUSES", (0, 2)))
    description = textwrap.fill(" ".join(description.split()), 100)
    return summary.rstrip("."), f"{summary}\n\n{description}\n\nexit status:\n{statuses}"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default, where it has a meaningful one and the
    help does not already say it in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in help_text.lower() and \
                action.option_strings:
            default = " ".join(action.default) if isinstance(action.default, (list, tuple)) else "%(default)s"
            help_text += f" (default: {default})"
        return help_text


SUBCOMMANDS = ("synth", "demo", "check", "plan", "cv", "benchmark", "detect", "dicom2nifti", "list")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-ext", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"nnunet_ext.commands.{name}")
        summary, description = help_text(module)
        subcommand = sub.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter)
        module.configure_parser(subcommand)
        subcommand.set_defaults(func=module.command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.catalog import UnknownTrainerError

    args = build_parser().parse_args(argv)
    try:  # our errors name the problem and the fix: print them without a traceback
        args.func(args)
    except (UnknownTrainerError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"nnunet-ext {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
