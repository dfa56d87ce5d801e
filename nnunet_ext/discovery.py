"""Zero-step trainer discovery for the stock ``nnUNetv2_*`` commands.

nnU-Net (>= 2.8) finds a trainer outside its own package only by searching the folders listed in the
``nnUNet_extTrainer`` environment variable; it has no plugin registry. The search imports every module of such
a folder under its bare name and pops them from ``sys.modules`` afterwards, so the folder we expose,
``trainer_lookup/``, holds exactly one uniquely named shim module that re-exports ``nnunet_ext.trainers``
(the real classes then stay importable, picklable and lazily importable). The shim also offers the trainers of
other installed packages that declare an entry point in the ``nnunet_ext.trainers`` group (``nnunet_ext.plugins``
holds the contract): their scan runs when nnU-Net's search imports the shim, never at interpreter start-up.

The package installs a ``.pth`` file whose one line calls :func:`activate` at interpreter start-up, so every
Python process of the environment (console scripts, DDP workers, data-loader workers) sees the folder. A
value the user already set is kept: ours is appended, never replacing theirs. This module therefore imports
nothing but ``os`` and ``pathlib``.
"""
import os
from pathlib import Path

ENV_VAR = "nnUNet_extTrainer"
TRAINER_LOOKUP_DIR = Path(__file__).resolve().parent / "trainer_lookup"


def entries(value: str | None) -> list[str]:
    """The folders listed in a value of ``nnUNet_extTrainer`` (split on ``os.pathsep``, blanks dropped)."""
    return [p for p in (value or "").split(os.pathsep) if p.strip()]


def is_active(environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Whether ``nnUNet_extTrainer`` in ``environ`` (default: this process) lists our trainer folder."""
    environ = os.environ if environ is None else environ
    ours = os.path.realpath(TRAINER_LOOKUP_DIR)
    return any(os.path.realpath(p) == ours for p in entries(environ.get(ENV_VAR)))


def activate() -> None:
    """Append our trainer folder to ``nnUNet_extTrainer`` unless it is listed already. Never raises: it runs
    at every interpreter start-up, where an exception would be printed by every Python command."""
    try:
        if not is_active():
            os.environ[ENV_VAR] = os.pathsep.join([*entries(os.environ.get(ENV_VAR)), str(TRAINER_LOOKUP_DIR)])
    except Exception:  # noqa: BLE001 - start-up hook; `nnunet-ext list` reports discovery as inactive instead
        pass


def export_line() -> str:
    """The shell line that activates discovery by hand, for environments that skip ``.pth`` files (python -S)."""
    return f'export {ENV_VAR}="${{{ENV_VAR}:+${ENV_VAR}{os.pathsep}}}{TRAINER_LOOKUP_DIR}"'
