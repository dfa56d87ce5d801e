"""Trainers of other installed packages: the ``nnunet_ext.trainers`` entry-point group.

The contract for a plug-in package
----------------------------------
Declare the module that holds your trainers in your package's ``pyproject.toml``::

    [project.entry-points."nnunet_ext.trainers"]
    my-package = "my_package.trainers"

The entry point's name is free (your package's name is a good choice). Its value names either

* a module: its trainers are the nnUNetTrainer subclasses named in its ``__all__``; without ``__all__``, every
  public nnUNetTrainer subclass defined in the module's own top-level package (so an imported
  ``nnUNetTrainerExt`` or ``nnUNetTrainer`` is not taken for one of yours); or
* an object, ``"my_package.trainers:nnUNetTrainerMine"`` or ``"my_package.trainers:TRAINERS"``: one
  nnUNetTrainer subclass, or a list or tuple of them.

A trainer is known by its class name (nnU-Net stores ``type(trainer).__name__`` in checkpoints and results folder
names), which must not contain ``__`` and must differ from nnU-Net's own trainers (those win in nnU-Net's
search), from nnunet-ext's and from every other plug-in's. After ``pip install`` (``-e`` too) the stock commands
(``nnUNetv2_train``, ``nnUNetv2_predict``, ...) and ``nnunet-ext list/check/cv/benchmark`` find the trainers.

What happens with bad plug-ins
------------------------------
* An entry point that fails to import (or names something that is not a trainer) is skipped with a
  :class:`PluginWarning` naming it, its package and the error; every other trainer is still found.
* A name exported by two packages (two plug-ins, or a plug-in and nnunet-ext) is ambiguous: asking for it raises
  :class:`TrainerNameClashError` naming both, while every other trainer is still found.

The scan runs once per process, the first time nnU-Net's trainer search (through the shim in ``trainer_lookup/``)
or ``nnunet_ext.catalog`` asks for it: never at interpreter start-up.
"""
from __future__ import annotations

import functools
import types
import warnings
from dataclasses import dataclass

GROUP = "nnunet_ext.trainers"
OURS = "nnunet-ext (nnunet_ext.trainers)"


class PluginWarning(UserWarning):
    """A plug-in entry point that was skipped; the message names it and says why."""


class TrainerNameClashError(RuntimeError):
    """A trainer name that two installed packages both export."""


@dataclass(frozen=True)
class PluginTrainer:
    """A trainer class found through an entry point of the ``nnunet_ext.trainers`` group.

    Args:
        cls: the trainer class.
        package: the distribution that declares the entry point, with its version (e.g. ``nnunet-tinyunet 0.1.0``).
        entry_point: the declaration, ``name = value``.
    """

    cls: type
    package: str
    entry_point: str

    @property
    def source(self) -> str:
        return f"{self.package} (entry point '{self.entry_point}')"


@dataclass(frozen=True)
class PluginScan:
    """What the entry points of this environment export.

    Args:
        trainers: plug-in trainers by class name, each exported by exactly one package.
        clashes: ambiguous names and every package that exports them (``OURS`` for nnunet-ext itself).
        problems: the messages of the entry points that were skipped (each also issued as a PluginWarning).
    """

    trainers: dict[str, PluginTrainer]
    clashes: dict[str, tuple[str, ...]]
    problems: tuple[str, ...]

    def clash_error(self, name: str) -> TrainerNameClashError | None:
        """The error to raise when ``name`` is asked for, or None when the name is not ambiguous."""
        if name not in self.clashes:
            return None
        sources = self.clashes[name]
        return TrainerNameClashError(
            f"Trainer name '{name}' is exported by {len(sources)} installed packages: {' and '.join(sources)}. "
            f"nnU-Net cannot tell which one you mean: uninstall one of them (pip uninstall ...) or rename the "
            f"class in one of them.")


def _our_trainers() -> dict[str, type]:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext import trainers

    return {name: obj for name in trainers.__all__
            if isinstance(obj := getattr(trainers, name), type) and issubclass(obj, nnUNetTrainer)}


def _package_of(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def trainers_exported_by(obj: object) -> list[type]:
    """The trainer classes an entry point's loaded object exports (see the module's contract).

    Raises:
        TypeError: the object is neither a module nor a trainer class nor a list or tuple of trainer classes.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def is_trainer(candidate: object) -> bool:
        return isinstance(candidate, type) and issubclass(candidate, nnUNetTrainer)

    if isinstance(obj, types.ModuleType):
        if hasattr(obj, "__all__"):
            return [c for name in obj.__all__ if is_trainer(c := getattr(obj, name, None))]
        package = obj.__name__.split(".")[0]
        return [c for name, c in vars(obj).items() if not name.startswith("_") and is_trainer(c)
                and c.__module__.split(".")[0] == package]
    if is_trainer(obj):
        return [obj]
    if isinstance(obj, (list, tuple)) and obj and all(is_trainer(c) for c in obj):
        return list(obj)
    raise TypeError(f"it names a {type(obj).__name__}, not a module, an nnUNetTrainer subclass or a list of them")


@functools.cache
def scan() -> PluginScan:
    """Load every entry point of the ``nnunet_ext.trainers`` group once per process (see the module's docstring)."""
    from importlib.metadata import entry_points

    ours = _our_trainers()
    problems: list[str] = []
    try:
        declared = sorted(entry_points(group=GROUP), key=lambda ep: (_package_of(ep), ep.name))
    except Exception as error:  # noqa: BLE001 - a malformed distribution must not hide nnunet-ext's own trainers
        declared = []
        problems.append(f"could not read the '{GROUP}' entry points ({type(error).__name__}: {error}); "
                        f"only nnunet-ext's own trainers are available.")

    providers: dict[str, list[PluginTrainer]] = {}
    for entry_point in declared:
        where = f"entry point '{entry_point.name} = {entry_point.value}' of {_package_of(entry_point)}"
        try:
            classes = trainers_exported_by(entry_point.load())
        except Exception as error:  # noqa: BLE001 - any failure of a third-party import skips that package only
            problems.append(f"skipped {where}: {type(error).__name__}: {error}. Its trainers are unavailable; "
                            f"the other trainers are not affected. Fix or uninstall that package.")
            continue
        if not classes:
            problems.append(f"{where} exports no nnUNetTrainer subclass (a module exports the ones in its "
                            f"__all__, or the public ones it defines).")
        for cls in classes:
            name = cls.__name__
            if ours.get(name) is cls or cls.__module__.startswith("nnunetv2."):
                continue  # a re-export of ours or of nnU-Net's own: found without the plug-in
            if "__" in name:
                problems.append(f"skipped trainer '{name}' of {where}: nnU-Net splits results folder names on "
                                f"'__', so trainer names must not contain it. Rename the class.")
                continue
            entries = providers.setdefault(name, [])
            if all(entry.cls is not cls for entry in entries):
                entries.append(PluginTrainer(cls, _package_of(entry_point),
                                             f"{entry_point.name} = {entry_point.value}"))

    trainers: dict[str, PluginTrainer] = {}
    clashes: dict[str, tuple[str, ...]] = {}
    for name, entries in providers.items():
        if name in ours or len(entries) > 1:
            clashes[name] = (*([OURS] if name in ours else []), *(entry.source for entry in entries))
        else:
            trainers[name] = entries[0]
    result = PluginScan(trainers, clashes, tuple(problems))
    for message in (*result.problems, *(str(result.clash_error(name)) for name in result.clashes)):
        # attributed to "nnunet-ext" rather than to a line of this file, which would tell the user nothing
        warnings.warn_explicit(message, PluginWarning, "nnunet-ext", 0, module=__name__)
    return result


def lookup_namespace() -> dict[str, object]:
    """The attributes of the lookup shim: nnunet-ext's exports and every plug-in trainer, without ambiguous names."""
    from nnunet_ext import trainers

    plugins = scan()
    namespace = {name: getattr(trainers, name) for name in trainers.__all__}
    namespace.update((name, entry.cls) for name, entry in plugins.trainers.items())
    for name in plugins.clashes:
        namespace.pop(name, None)
    return namespace
