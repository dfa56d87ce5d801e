"""The trainers on offer and what ``nnunet-ext list`` shows.

A trainer name resolves as the stock ``nnUNetv2_train`` resolves it, after nnunet-ext's own trainers and those of
plug-in packages: through nnU-Net's own lookup (``recursive_find_trainer_class_by_name``), which searches nnU-Net's
package and then the folders of the ``nnUNet_extTrainer`` environment variable. So every subcommand that takes
``-tr`` accepts a user's own trainer kept in such a folder, exactly when ``nnUNetv2_train`` does.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import pkgutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from nnunet_ext import discovery
from nnunet_ext.architectures.profiling import count_parameters
from nnunet_ext.plugins import scan

CONFIGURATIONS_BY_DIM = {2: ("2d",), 3: ("3d_fullres", "3d_lowres", "3d_cascade_fullres")}
OUR_PACKAGE = "nnunet-ext"


class UnknownTrainerError(LookupError):
    """A trainer name that neither nnU-Net, nnunet-ext nor an installed plug-in provides."""


def _is_concrete(trainer: type) -> bool:
    return getattr(trainer, "network_class", True) is not None  # drops abstract bases such as nnUNetTrainerExt


def trainer_classes() -> dict[str, type]:
    """Every trainer class of nnunet-ext (``nnunet_ext.trainers``) and of the installed plug-in packages
    (``nnunet_ext.plugins``), full-length and short variants, by name. A name that two packages export is
    ambiguous and left out (``resolve_trainer`` raises its clash error)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext import trainers

    plugins = scan()
    ours = {name: obj for name in trainers.__all__
            if isinstance(obj := getattr(trainers, name), type) and issubclass(obj, nnUNetTrainer)}
    found = {**ours, **{name: entry.cls for name, entry in plugins.trainers.items()}}
    return {name: cls for name, cls in found.items() if _is_concrete(cls) and name not in plugins.clashes}


def external_trainer_folders() -> list[Path]:
    """The folders in ``nnUNet_extTrainer`` that exist, in search order, without nnunet-ext's own lookup folder
    (its trainers are ours and the plug-ins')."""
    ours = os.path.realpath(discovery.TRAINER_LOOKUP_DIR)
    folders = [Path(p) for p in discovery.entries(os.environ.get(discovery.ENV_VAR))]
    return [f for f in dict.fromkeys(folders) if f.is_dir() and os.path.realpath(f) != ours]


@functools.cache
def _external_trainers(folders: tuple[Path, ...]) -> dict[str, tuple[type, Path]]:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_class_by_name import (temporarily_cleanup_imports_from_path,
                                                       temporarily_extend_syspath)

    found: dict[str, tuple[type, Path]] = {}
    for folder in folders:
        # imported as nnU-Net's lookup imports them: bare module names, removed from sys.modules afterwards
        with temporarily_extend_syspath(str(folder)), temporarily_cleanup_imports_from_path(str(folder)):
            for module_info in pkgutil.walk_packages([str(folder)]):
                try:
                    module = importlib.import_module(module_info.name)
                except Exception as error:  # noqa: BLE001 - one broken module must not hide the others
                    warnings.warn(f"Skipped {module_info.name} in {folder} ({discovery.ENV_VAR}): "
                                  f"{type(error).__name__}: {error}", stacklevel=2)
                    continue
                for name, obj in vars(module).items():
                    if (isinstance(obj, type) and issubclass(obj, nnUNetTrainer) and obj.__module__ == module.__name__
                            and name not in found):
                        found[name] = (obj, folder)
    return found


def external_trainers() -> dict[str, tuple[type, Path]]:
    """The trainers defined in the modules of the ``nnUNet_extTrainer`` folders (``external_trainer_folders``), by
    name, with their folder; the first folder wins, as in nnU-Net's search. A module that fails to import is
    skipped with a warning naming it. Cached per folder list: a class keeps its identity within a process."""
    return _external_trainers(tuple(external_trainer_folders()))


def resolve_trainer(name: str) -> type:
    """A trainer class by name: nnunet-ext's, a plug-in's, or whatever the stock ``nnUNetv2_train`` finds for
    it (nnU-Net's own trainers and those in the ``nnUNet_extTrainer`` folders).

    Raises:
        TrainerNameClashError: two installed packages export ``name`` (the message names both).
        UnknownTrainerError: nobody provides ``name`` (the message lists the trainers on offer and the folders
            searched).
    """
    clash = scan().clash_error(name)
    if clash is not None:
        raise clash
    known = trainer_classes()
    if name in known:
        return known[name]
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its search on stdout
            return recursive_find_trainer_class_by_name(name)
    except RuntimeError as error:
        if "Could not find requested nnunet trainer" not in str(error):
            raise
    folders = external_trainer_folders()
    searched = (f"the {discovery.ENV_VAR} folders ({', '.join(map(str, folders))})" if folders else
                f"no {discovery.ENV_VAR} folder (the variable names none but nnunet-ext's own)")
    on_offer = sorted({*known, *external_trainers()})
    raise UnknownTrainerError(f"Unknown trainer '{name}': neither nnU-Net's, nnunet-ext's, a plug-in's, nor in "
                              f"{searched}. On offer besides nnU-Net's own: {', '.join(on_offer)}.")


def package_of(trainer: type) -> str:
    """Where ``trainer`` comes from: ``nnunet-ext``, a plug-in's distribution name and version, or the
    ``nnUNet_extTrainer`` folder that holds it."""
    entry = scan().trainers.get(trainer.__name__)
    if entry is not None and entry.cls is trainer:
        return entry.package
    external = external_trainers().get(trainer.__name__)
    if external is not None and external[0] is trainer:
        return f"{external[1]} ({discovery.ENV_VAR})"
    return OUR_PACKAGE


def _full_length(names: list[str], parents: list[str]) -> list[str]:
    """``names`` without the short variants: a name ``<parent>_<suffix>`` is a variant of that parent."""
    return [name for name in names if not any(name.startswith(parent + "_") for parent in parents)]


def listed_trainers() -> list[type]:
    """The full-length trainers ``nnunet-ext list`` shows: nnunet-ext's, then each plug-in's, then those of the
    ``nnUNet_extTrainer`` folders (a trainer named ``<other trainer>_<suffix>`` counts as a short variant of that
    other trainer)."""
    from nnunet_ext.trainers import BASELINES, TRAINERS

    known = trainer_classes()
    plugins = scan()
    plugin_names = sorted(name for name in plugins.trainers if name in known)
    # the variant of an ambiguous trainer is not full-length
    plugin_full = _full_length(plugin_names, [*plugins.trainers, *plugins.clashes])
    external = {name: cls for name, (cls, _) in external_trainers().items() if name not in known}
    external_full = _full_length(sorted(external), list(external))
    return ([t for t in (*TRAINERS, *BASELINES) if t.__name__ in known] + [known[n] for n in plugin_full]
            + [external[n] for n in external_full])


def supported_configurations(trainer: type) -> tuple[str, ...]:
    dims = getattr(trainer, "supported_dims", (2, 3))
    return tuple(c for d in dims for c in CONFIGURATIONS_BY_DIM[d])


@dataclass(frozen=True)
class TrainerInfo:
    name: str
    network: str
    dims: str
    configurations: str
    parameters: int | None
    variants: str
    package: str = OUR_PACKAGE


def describe(trainer: type) -> TrainerInfo:
    """What ``nnunet-ext list`` prints about one full-length trainer. A plug-in trainer that is not built on
    ``nnUNetTrainerExt`` (no ``reference_network``) shows its network as '-' and its parameters as None."""
    network = trainer.reference_network() if hasattr(trainer, "reference_network") else None
    names = {*trainer_classes(), *external_trainers()}
    variants = sorted(n for n in names if n.startswith(trainer.__name__ + "_"))
    dims = getattr(trainer, "supported_dims", (2, 3))
    return TrainerInfo(
        name=trainer.__name__,
        network=type(network).__name__ if network is not None else "-",
        dims="/".join(f"{d}D" for d in dims),
        configurations=", ".join(supported_configurations(trainer)),
        parameters=count_parameters(network) if network is not None else None,
        variants=", ".join(v.removeprefix(trainer.__name__) for v in variants),
        package=package_of(trainer),
    )

