"""The shared base of every nnunet-ext trainer.

A trainer of this package is a small subclass that names its network (``build_network_architecture``) and the
recipe of the original work where it differs from nnU-Net's default. Everything else lives here, once:

* the dimension check (a 2D-only network asked for ``3d_fullres`` fails early, naming the configurations that work);
* a patch-size hook that edits the plans *before* ``nnUNetTrainer.__init__``, as nnU-Net's Primus trainers do, so
  the training loader, ``plans.json`` in the results folder and the predictor all see the same patch;
* deep-supervision scales taken from the network itself, and per-output loss weights around nnU-Net's own losses;
* the optimizer step with a per-trainer gradient-clipping norm (autocast and GradScaler only on CUDA, as upstream);
* the network's parameter count and MACs at the patch size in the training log;
* preemption safety (``PreemptionSafeMixin``, also used by ``nnUNetTrainerPreemptible``): atomic, frequent
  checkpoints, a clean stop with exit status 75 on SIGTERM/SIGUSR1, and ``--c`` that survives a damaged folder.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import zipfile
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import isfile, join
from torch import autocast, nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_ext.architectures.profiling import count_macs, count_parameters
from nnunet_ext.trainers.lr_schedules import WarmupPolyLRScheduler


# what `nnunet-ext plan` records in each configuration it plans (predicted memory, target, precision, checkpointing)
PLANS_KEY = "nnunet_ext"


def planned_activation_checkpointing(configuration_manager: ConfigurationManager | None) -> bool:
    """Whether ``nnunet-ext plan`` planned this configuration with activation checkpointing: the trainers' builders
    pass it to the network, so training and prediction build the network that was planned. No configuration
    (a network built for a listing): off."""
    if configuration_manager is None:
        return False
    return bool(configuration_manager.configuration.get(PLANS_KEY, {}).get("activation_checkpointing", False))


class UnsupportedConfigurationError(ValueError):
    """A configuration whose dimensionality the trainer's network cannot process."""


# ---- preemption safety -----------------------------------------------------------------------------------------

EXIT_PREEMPTED = 75  # EX_TEMPFAIL, "try again later": `nnunet-ext cv` and the README's SLURM script requeue on it
PARTIAL_SUFFIX = ".partial"
CHECKPOINT_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")  # nnU-Net's --c order
CHECKPOINT_EVERY_ENV = "NNUNET_EXT_CHECKPOINT_EVERY"
CHECKPOINT_MINUTES_ENV = "NNUNET_EXT_CHECKPOINT_MINUTES"
STOP_SIGNALS_ENV = "NNUNET_EXT_STOP_SIGNALS"
_CHECKPOINT_KEYS = ("network_weights", "optimizer_state", "logging", "current_epoch", "init_args", "trainer_name")


class TrainingInterrupted(Exception):
    """Raised in the training loop, between two iterations, once a stop signal has arrived."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint written by another trainer, plans or configuration than the one asked to continue it."""


class NoLoadableCheckpointError(RuntimeError):
    """``--c`` found checkpoints, but none of them can be loaded."""


def _fsync_folder(folder: str) -> None:
    # the rename itself must reach the disk too; Windows cannot open a folder (and journals renames on NTFS)
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(partial: str, filename: str) -> None:
    """Flush the complete file ``partial`` to disk, then move it onto ``filename`` in one step (``os.replace``):
    ``filename`` names either its old content or the new one, whenever the process is killed."""
    with open(partial, "rb+") as written:
        os.fsync(written.fileno())
    os.replace(partial, filename)
    _fsync_folder(os.path.dirname(os.path.abspath(filename)))


def save_atomically(obj: object, filename: str) -> None:
    """``torch.save`` that never leaves a partial file under ``filename``: it writes ``filename + '.partial'``
    in the same folder (same file system, so the rename is atomic), fsyncs it and renames it."""
    partial = filename + PARTIAL_SUFFIX
    torch.save(obj, partial)
    replace_durably(partial, filename)


def load_checked_checkpoint(filename: str | os.PathLike) -> dict:
    """An nnU-Net checkpoint loaded cheaply for checking: its tensors memory-mapped, not read. Raises on a truncated
    or corrupt file (a zip archive without its directory, a failed unpickling) and on a file that is no nnU-Net
    checkpoint (KeyError naming the missing entries). ``--c`` and ``nnunet-ext cv`` check files with it."""
    if os.path.getsize(filename) == 0:
        raise ValueError("the file is empty")
    if not zipfile.is_zipfile(filename):  # torch.save writes a zip archive, whose directory comes last
        raise ValueError("not a complete checkpoint (truncated or corrupt: no zip directory at its end)")
    checkpoint = torch.load(filename, map_location="cpu", weights_only=False, mmap=True)
    missing = [k for k in _CHECKPOINT_KEYS if k not in checkpoint] if isinstance(checkpoint, dict) else \
        list(_CHECKPOINT_KEYS)
    if missing:
        raise KeyError(f"no {', '.join(missing)} in it")
    return checkpoint


def _env_number(name: str, default: float, kind: type) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        number = -1
    if number < 0:
        expected = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}={value!r} is not a valid setting: expected {expected} >= 0 "
                         f"(unset it to use the trainer's default, {default}).")
    return number


def _stop_signal_numbers(names: Sequence[str]) -> tuple[signal.Signals, ...]:
    env = os.environ.get(STOP_SIGNALS_ENV)
    if env is not None:
        names = [] if env.strip().lower() in ("", "none") else [n.strip() for n in env.split(",")]
    numbers = []
    for name in names:
        full = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
        if not hasattr(signal.Signals, full):
            source = f"{STOP_SIGNALS_ENV}={env!r}" if env is not None else f"stop_signals={tuple(names)!r}"
            raise ValueError(f"{source}: '{name}' is not a signal on this platform. Use names such as SIGTERM,SIGUSR1 "
                             f"(or 'none' to keep the default signal behaviour).")
        numbers.append(signal.Signals[full])
    return tuple(numbers)


def checkpoint_mismatch(checkpoint: dict, trainer_name: str, plans_name: str, configuration: str,
                        configuration_settings: dict) -> str | None:
    """Why ``checkpoint`` cannot continue the run of ``trainer_name`` with those plans, or None if it can."""
    init_args = checkpoint.get("init_args") or {}
    plans = init_args.get("plans") or {}
    theirs = (checkpoint.get("trainer_name"), plans.get("plans_name"), init_args.get("configuration"))
    if theirs != (trainer_name, plans_name, configuration):
        return (f"it was written by trainer {theirs[0]} (plans {theirs[1]}, configuration {theirs[2]}), and this is "
                f"trainer {trainer_name} (plans {plans_name}, configuration {configuration})")
    settings = PlansManager(plans).get_configuration(configuration).configuration
    differing = sorted(k for k in set(settings) | set(configuration_settings)
                       if settings.get(k) != configuration_settings.get(k))
    if differing:
        return (f"it was trained with other settings of plans {plans_name} / {configuration} than the current "
                f"plans file: " + "; ".join(f"{k}: checkpoint {settings.get(k)!r}, plans now "
                                             f"{configuration_settings.get(k)!r}" for k in differing))
    return None


class _StopCheckingLoader:
    """A training or validation loader that checks for a stop request before handing out each batch, so the
    loop stops between two iterations. ``loader`` is nnU-Net's augmenter, kept for its shutdown."""

    def __init__(self, loader, trainer: PreemptionSafeMixin):
        self.loader = loader
        self.trainer = trainer

    def __iter__(self):
        return self

    def __next__(self):
        if self.trainer.stop_requested():
            raise TrainingInterrupted
        return next(self.loader)


class PreemptionSafeMixin:
    """Preemption-safe training for any ``nnUNetTrainer``: put it before the trainer in the bases.

    * Atomic checkpoints: every checkpoint is written to ``<name>.partial`` in the same folder, fsynced and moved
      onto its name with ``os.replace``, so a kill at any moment leaves the previous file or the new one.
    * Frequent checkpoints: ``checkpoint_latest.pth`` every ``checkpoint_every_epochs`` epochs (nnU-Net: 50) and
      also once ``checkpoint_every_minutes`` have passed at the end of an epoch (0: off). The environment
      variables ``NNUNET_EXT_CHECKPOINT_EVERY`` and ``NNUNET_EXT_CHECKPOINT_MINUTES`` override them.
    * A clean stop: on one of ``stop_signals`` (``NNUNET_EXT_STOP_SIGNALS=SIGTERM,SIGUSR2`` or ``none``
      overrides them) the handler only notes the signal; the loop stops before its next batch, writes
      ``checkpoint_latest.pth`` so that ``--c`` reruns the interrupted epoch, shuts the data-loader workers down,
      logs how to resume and exits with status 75 (EX_TEMPFAIL). Under DDP the note is all-reduced before each
      batch, so every rank stops at the same iteration and rank 0 writes. During the final validation (nothing
      that ``--c`` needs is written then) a stop signal ends it at once, with the same status.
    * ``--c`` on a damaged folder: a checkpoint that cannot be loaded is skipped with a warning naming it, and
      the next one in nnU-Net's order (final, latest, best) is used; a checkpoint of another trainer, plans or
      configuration stops with an error naming both, before anything is written.
    """

    checkpoint_every_epochs: int = 1
    checkpoint_every_minutes: float = 0.0
    stop_signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # settings first: a bad environment variable fails before nnU-Net creates the output folder
        every = max(1, int(_env_number(CHECKPOINT_EVERY_ENV, self.checkpoint_every_epochs, int)))
        minutes = _env_number(CHECKPOINT_MINUTES_ENV, self.checkpoint_every_minutes, float)
        stop_signals = _stop_signal_numbers(self.stop_signals)
        self._continue_requested = bool(plans.get("continue_training", False))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = every
        self._checkpoint_seconds = 60 * minutes
        self._stop_signals = stop_signals
        self._received_signal: int | None = None
        self._resumed_from: str | None = None
        self._last_latest_checkpoint = time.monotonic()

    # ---- stop on a signal ----------------------------------------------------------------------------------

    def _note_stop_signal(self, signum: int, frame) -> None:
        # only a note: the loop acts on it between two iterations, when the state is consistent
        if self._received_signal is None:
            self._received_signal = signum

    def _install_signal_handlers(self, handler) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # Python accepts signal handlers only in the main thread; keep the default behaviour
        return {s: signal.signal(s, handler) for s in self._stop_signals}

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def stop_requested(self) -> bool:
        """Whether a stop signal has arrived here or, under DDP, on any rank (one small all-reduce)."""
        stop = self._received_signal is not None
        if self.is_ddp:
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _signal_name(self) -> str:
        return signal.Signals(self._received_signal).name if self._received_signal else "a stop on another rank"

    def _resume_command(self) -> str:
        gpus = f" -num_gpus {dist.get_world_size()}" if self.is_ddp else ""
        return (f"nnUNetv2_train {self.plans_manager.dataset_name} {self.configuration_name} {self.fold} "
                f"-tr {type(self).__name__} -p {self.plans_manager.plans_name}{gpus} --c")

    def _shut_down_data_loaders(self) -> None:
        for name in ("dataloader_train", "dataloader_val"):
            loader = getattr(self, name)
            if isinstance(loader, _StopCheckingLoader):
                setattr(self, name, loader.loader)
            loader = getattr(self, name)
            if isinstance(loader, (NonDetMultiThreadedAugmenter, MultiThreadedAugmenter)):
                loader._finish()

    def _stop_and_exit(self) -> None:
        epoch = self.current_epoch
        # the log keeps one entry per finished epoch; --c reruns the interrupted one from its start
        for values in self.logger.get_checkpoint().values():
            del values[epoch:]
        self.current_epoch = epoch - 1  # a checkpoint stores current_epoch + 1, the epoch to run next
        self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
        self.current_epoch = epoch
        self._shut_down_data_loaders()
        if self.is_ddp:
            dist.barrier()  # no rank exits (and makes the launcher kill the others) before rank 0 has written
        saved = "nothing saved (checkpointing is disabled)" if self.disable_checkpointing else \
            f"checkpoint_latest.pth continues with epoch {epoch}"
        self.print_to_log_file(f"Stopped by {self._signal_name()} during epoch {epoch}; {saved}. Resume with: "
                               f"{self._resume_command()}")
        if self.is_ddp:
            dist.destroy_process_group()
        raise SystemExit(EXIT_PREEMPTED)

    def run_training(self):
        if self._continue_requested and self._resumed_from is None:
            self.print_to_log_file(f"--c: no checkpoint in {self.output_folder}, so training starts at epoch 0.",
                                   also_print_to_console=False)
        previous = self._install_signal_handlers(self._note_stop_signal)
        try:
            super().run_training()
        except TrainingInterrupted:
            self._stop_and_exit()
        finally:
            self._restore_signal_handlers(previous)
        if self.stop_requested():  # the signal came after the last iteration: the training itself is complete
            self.print_to_log_file(f"Stopped by {self._signal_name()} after training, before the validation. "
                                   f"checkpoint_final.pth is complete; run the validation with: "
                                   f"{self._resume_command()}")
            raise SystemExit(EXIT_PREEMPTED)

    def perform_actual_validation(self, save_probabilities: bool = False):
        def stop_now(signum: int, frame) -> None:
            self._received_signal = signum
            raise TrainingInterrupted

        previous = self._install_signal_handlers(stop_now)
        try:
            super().perform_actual_validation(save_probabilities)
        except TrainingInterrupted:
            self.print_to_log_file(f"Validation stopped by {self._signal_name()}; run it again with: "
                                   f"{self._resume_command()}")
            raise SystemExit(EXIT_PREEMPTED)
        finally:
            self._restore_signal_handlers(previous)

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:
            for name in CHECKPOINT_ORDER:  # left by a kill during a write; the complete file under `name` stands
                if isfile(join(self.output_folder, name + PARTIAL_SUFFIX)):
                    os.remove(join(self.output_folder, name + PARTIAL_SUFFIX))
        self.dataloader_train = _StopCheckingLoader(self.dataloader_train, self)
        self.dataloader_val = _StopCheckingLoader(self.dataloader_val, self)

    def on_train_end(self):
        for name in ("dataloader_train", "dataloader_val"):  # nnU-Net shuts its own augmenter types down
            loader = getattr(self, name)
            if isinstance(loader, _StopCheckingLoader):
                setattr(self, name, loader.loader)
        super().on_train_end()

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def on_epoch_end(self):
        super().on_epoch_end()  # writes checkpoint_latest.pth every save_every epochs, then counts the epoch
        overdue = self._checkpoint_seconds > 0 and \
            time.monotonic() - self._last_latest_checkpoint >= self._checkpoint_seconds
        if overdue and self.current_epoch < self.num_epochs:
            self.current_epoch -= 1
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
            self.current_epoch += 1

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # nnU-Net's own: nothing on other ranks, a notice when disabled
            return
        partial = filename + PARTIAL_SUFFIX
        super().save_checkpoint(partial)  # nnU-Net's checkpoint content, under a temporary name
        replace_durably(partial, filename)
        if os.path.basename(filename) == "checkpoint_latest.pth":
            self._last_latest_checkpoint = time.monotonic()

    def _continue_candidates(self, filename: str) -> list[str] | None:
        """The files ``--c`` may fall back to, in nnU-Net's order from ``filename`` on; None outside ``--c``."""
        folder, name = os.path.split(os.path.abspath(filename))
        if not self._continue_requested or name not in CHECKPOINT_ORDER or \
                folder != os.path.abspath(self.output_folder):
            return None
        later = CHECKPOINT_ORDER[CHECKPOINT_ORDER.index(name) + 1:]
        return [filename] + [join(folder, n) for n in later if isfile(join(folder, n))]

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not isinstance(filename_or_checkpoint, (str, os.PathLike)):
            self._refuse_mismatch(filename_or_checkpoint, "the checkpoint")
            super().load_checkpoint(filename_or_checkpoint)
            return
        candidates = self._continue_candidates(str(filename_or_checkpoint))
        may_fall_back = candidates is not None
        candidates = candidates or [str(filename_or_checkpoint)]
        skipped = []
        for candidate in candidates:
            try:
                checkpoint = load_checked_checkpoint(candidate)
            except Exception as error:  # truncated, corrupt or not a checkpoint at all
                if not may_fall_back:
                    raise
                skipped.append(f"{os.path.basename(candidate)} ({type(error).__name__}: {error})")
                self.print_to_log_file(f"WARNING: cannot load {candidate}: {type(error).__name__}: {error}. "
                                       f"Skipped it.")
                continue
            self._refuse_mismatch(checkpoint, candidate)
            del checkpoint
            super().load_checkpoint(candidate)  # nnU-Net 2.8.1 accepts only a file name here (a dict fails)
            self._resumed_from = candidate
            if skipped:
                self.print_to_log_file(f"WARNING: --c continues from {os.path.basename(candidate)} (epoch "
                                       f"{self.current_epoch}) after skipping {'; '.join(skipped)}.")
            return
        raise NoLoadableCheckpointError(
            f"--c found no loadable checkpoint in {os.path.dirname(candidates[0])}: {'; '.join(skipped)}. Move the "
            f"damaged files away to start this fold from epoch 0 (or train without --c in a fresh folder).")

    def _refuse_mismatch(self, checkpoint: dict, source: str) -> None:
        if not isinstance(checkpoint, dict):
            return
        reason = checkpoint_mismatch(checkpoint, type(self).__name__, self.plans_manager.plans_name,
                                     self.configuration_name, self.configuration_manager.configuration)
        if reason is not None:
            raise CheckpointMismatchError(
                f"Cannot continue from {source}: {reason}. Nothing was changed. Continue it with the trainer and "
                f"plans it was written by, or train this trainer in its own results folder without --c.")


class nnUNetTrainerExt(PreemptionSafeMixin, nnUNetTrainer):
    """Base trainer of nnunet-ext. Subclasses set the class constants and override the hook that differs:
    ``network_kwargs`` (what the network needs from the plan or the class), ``build_optimizer``,
    ``build_lr_scheduler``, ``adjust_patch_size``, ``deep_supervision_weights``.

    Class constants (the builder and the dimension check read them, so they are never instance state):
        network_class: the architecture class, built by ``build_network_architecture``, listed by
            ``nnunet-ext list``, and asked for the deep-supervision scales.
        supported_dims: spatial dimensionalities the network handles, (2,), (3,) or (2, 3).
        grad_clip_norm: gradient-norm clipping in ``train_step`` (nnU-Net uses 12).
        deep_supervision: whether the network trains with its deep-supervision outputs (``nnunet-ext plan`` reads
            it too, so the planned memory is that of the training step).
        initial_lr_override, weight_decay_override: the original recipe's learning rate and weight decay; None
            keeps nnU-Net's.

    ``build_optimizer`` and ``training_memory`` are classmethods so that ``nnunet-ext plan`` sizes the patch with the
    optimizer and loss the trainer really uses, without creating a trainer (and its output folder).
    """

    network_class: type[nn.Module] | None = None
    supported_dims: tuple[int, ...] = (2, 3)
    grad_clip_norm: float = 12.0
    deep_supervision: bool = True
    initial_lr_override: float | None = None
    weight_decay_override: float | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.check_configuration(plans, configuration)
        original_patch = list(PlansManager(plans).get_configuration(configuration).patch_size)
        adjusted_patch = [int(p) for p in self.adjust_patch_size(original_patch)]
        if adjusted_patch != original_patch:
            plans["configurations"][configuration]["patch_size"] = adjusted_patch
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = self.deep_supervision
        if self.initial_lr_override is not None:
            self.initial_lr = self.initial_lr_override
        if self.weight_decay_override is not None:
            self.weight_decay = self.weight_decay_override
        if adjusted_patch != original_patch:
            self.print_to_log_file(f"{type(self).__name__}: patch size {original_patch} -> {adjusted_patch} "
                                   f"(what {self._network_name()} needs; plans.json records the new patch)")

    # ---- checks and hooks for subclasses ---------------------------------------------------------------------

    @classmethod
    def _network_name(cls) -> str:
        return cls.network_class.__name__ if cls.network_class is not None else "the network"

    @classmethod
    def check_configuration(cls, plans: dict, configuration: str) -> None:
        """Raise UnsupportedConfigurationError if ``configuration`` has a dimensionality the network lacks."""
        manager = PlansManager(plans)
        available = manager.available_configurations
        if configuration not in available:
            raise UnsupportedConfigurationError(
                f"Configuration '{configuration}' is not in the plans '{manager.plans_name}'. "
                f"Available: {', '.join(available)}. Run nnUNetv2_plan_and_preprocess -c {configuration} first, "
                f"or pick one of those.")
        dim = len(manager.get_configuration(configuration).patch_size)
        if dim not in cls.supported_dims:
            usable = [c for c in available if len(manager.get_configuration(c).patch_size) in cls.supported_dims]
            dims = "/".join(f"{d}D" for d in cls.supported_dims)
            hint = (f"Use one of these configurations instead: {', '.join(usable)}." if usable else
                    f"The plans have no {dims} configuration; plan one with nnUNetv2_plan_and_preprocess -c "
                    f"{'2d' if 2 in cls.supported_dims else '3d_fullres'}.")
            raise UnsupportedConfigurationError(
                f"{cls.__name__} trains {cls._network_name()}, a {dims}-only network, but configuration "
                f"'{configuration}' is {dim}D. {hint}")

    @classmethod
    def reference_network(cls) -> nn.Module:
        """The network at a reference set-up (1 input channel, 3 outputs, deep supervision on), for listings."""
        return cls.network_class(1, 3, deep_supervision=True)

    @classmethod
    def adjust_patch_size(cls, patch_size: list[int]) -> list[int]:
        """Return the patch size to train and predict with, given the planned one. Default: the size the network
        pads it to (its ``padded_input_size``, where it has one), so that no step trains on zero padding; else
        unchanged."""
        padded_input_size = getattr(cls.network_class, "padded_input_size", None)
        return padded_input_size(patch_size) if padded_input_size is not None else patch_size

    @classmethod
    def network_kwargs(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> dict:
        """Keywords of ``network_class`` beyond (input_channels, num_classes, deep_supervision). Default: the
        activation checkpointing ``nnunet-ext plan`` planned; override to add what the plan or the class sets."""
        return {"activation_checkpointing": planned_activation_checkpointing(configuration_manager)}

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # a classmethod: nnU-Net calls it on the class at prediction time too, with each subclass's network_kwargs
        return cls.network_class(num_input_channels, num_output_channels, deep_supervision=enable_deep_supervision,
                                 **cls.network_kwargs(plans_manager, configuration_manager))

    @classmethod
    def build_optimizer(cls, parameters: Iterable[nn.Parameter], initial_lr: float,
                        weight_decay: float) -> torch.optim.Optimizer:
        """The optimizer of ``configure_optimizers``. Default: nnU-Net's SGD with Nesterov momentum 0.99."""
        return torch.optim.SGD(parameters, initial_lr, weight_decay=weight_decay, momentum=0.99, nesterov=True)

    def configure_optimizers(self):
        optimizer = self.build_optimizer(self.network.parameters(), self.initial_lr, self.weight_decay)
        return optimizer, self.build_lr_scheduler(optimizer)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer):
        """The learning-rate schedule of ``configure_optimizers``. Default: nnU-Net's poly decay."""
        return PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    @classmethod
    def training_memory(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                        dataset_json: dict, batch_size: int, precision: str = "fp32"):
        """Predicted memory of one training step (``nnunet_ext.architectures.memory.TrainingMemory``, bytes) of
        this trainer's network, optimizer and nnU-Net loss at the configuration's patch size and ``batch_size``,
        traced without data. A plug-in whose network the generic trace cannot follow overrides this method."""
        from nnunet_ext.architectures.memory import estimate_training_memory

        channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
        label_manager = plans_manager.get_label_manager(dataset_json)
        loss = cls._loss_without_trainer(configuration_manager, label_manager)

        def build() -> nn.Module:
            return cls.build_network_architecture(plans_manager, configuration_manager, channels,
                                                  label_manager.num_segmentation_heads, cls.deep_supervision)

        def step_loss(output) -> torch.Tensor:  # targets as nnU-Net's loader makes them, one per output scale
            outputs = list(output) if isinstance(output, (list, tuple)) else [output]
            if label_manager.has_regions:
                targets = [torch.zeros((o.shape[0], len(label_manager.foreground_regions)
                                        + (label_manager.ignore_label is not None), *o.shape[2:]),
                                       dtype=torch.bool, device=o.device) for o in outputs]
            else:
                targets = [torch.zeros((o.shape[0], 1, *o.shape[2:]), dtype=torch.int16, device=o.device)
                           for o in outputs]
            return loss(output, targets if isinstance(output, (list, tuple)) else targets[0])

        return estimate_training_memory(
            build, (batch_size, channels, *configuration_manager.patch_size), precision=precision,
            optimizer_factory=lambda parameters: cls.build_optimizer(parameters, 1e-2, 3e-5), loss_fn=step_loss)

    @classmethod
    def _loss_without_trainer(cls, configuration_manager: ConfigurationManager, label_manager) -> nn.Module:
        # nnU-Net's _build_loss (and this trainer's override of it) on a bare instance holding only what it reads:
        # constructing a trainer would create its output folder and log file
        shell = cls.__new__(cls)
        shell.configuration_manager, shell.label_manager = configuration_manager, label_manager
        shell.is_ddp, shell.device, shell.enable_deep_supervision = False, torch.device("cpu"), cls.deep_supervision
        return shell._build_loss()

    def warmup_poly_lr_scheduler(self, optimizer: torch.optim.Optimizer, warmup_fraction: float):
        """nnU-Net's poly schedule after a linear warm-up over ``warmup_fraction`` of the epochs (at least one
        epoch, and none when the run is too short for both phases)."""
        warmup_epochs = min(max(1, round(self.num_epochs * warmup_fraction)), self.num_epochs - 1)
        if warmup_epochs < 1:
            return PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        return WarmupPolyLRScheduler(optimizer, self.initial_lr, warmup_epochs, self.num_epochs)

    def deep_supervision_weights(self, num_outputs: int) -> list[float] | None:
        """Loss weight per deep-supervision output, full resolution first; None keeps nnU-Net's (halving per
        scale, the coarsest output off). Keep every weight above 0 under DDP: a head without gradient fails there."""
        return None

    # ---- nnU-Net overrides -----------------------------------------------------------------------------------

    def _unwrapped_network(self) -> nn.Module:
        network = self.network.module if isinstance(self.network, DDP) else self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return self.network_class.deep_supervision_scales(self.configuration_manager.patch_size)

    def _build_loss(self):
        loss = super()._build_loss()
        if isinstance(loss, DeepSupervisionWrapper):
            weights = self.deep_supervision_weights(len(loss.weight_factors))
            if weights is not None:
                loss = DeepSupervisionWrapper(loss.loss, weights)
        return loss

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.local_rank == 0:
            self._log_network_size()
            self._log_predicted_memory()

    def _log_network_size(self) -> None:
        network = self._unwrapped_network()
        patch = tuple(self.configuration_manager.patch_size)
        was_training = network.training
        macs = count_macs(network, torch.zeros((1, self.num_input_channels, *patch), device=self.device))
        network.train(was_training)
        self.print_to_log_file(f"Network {type(network).__name__}: {count_parameters(network):,} parameters, "
                               f"{macs / 1e9:.2f} GMAC per forward pass at patch {list(patch)} (batch 1)")

    def _log_predicted_memory(self) -> None:
        planned = self.configuration_manager.configuration.get(PLANS_KEY)
        if not planned:
            return
        self.print_to_log_file(
            f"Predicted training memory (nnunet-ext plan): {planned['predicted_memory_gb']:.2f} GB at batch "
            f"{self.configuration_manager.batch_size}, patch {list(self.configuration_manager.patch_size)}, "
            f"precision {planned['precision']}, activation checkpointing "
            f"{'on' if planned['activation_checkpointing'] else 'off'} (target "
            f"{planned['gpu_memory_target_gb']:g} GB)")

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)

        self.optimizer.zero_grad(set_to_none=True)
        # autocast only on CUDA: slow on CPU, unsupported on MPS (as in nnU-Net's own train_step)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.loss(self.network(data), target)

        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}


class ShortRunMixin:
    """Few epochs and iterations, no mirroring: for tests and demos, like nnU-Net's ``nnUNetTrainer_5epochs``.

    Put it first in the bases: ``class nnUNetTrainerX_Smoke(ShortRunMixin, nnUNetTrainerX)``.
    """

    short_epochs: int = 1
    short_iterations: int = 2
    short_val_iterations: int = 1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.short_epochs
        self.num_iterations_per_epoch = self.short_iterations
        self.num_val_iterations_per_epoch = self.short_val_iterations

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        # stored in the checkpoint, so prediction skips mirroring test-time augmentation too
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, None


class DemoRunMixin(ShortRunMixin):
    """The step budget of ``nnunet-ext demo``: the same for every trainer, so the demo's comparison is fair, and
    a few minutes per trainer on 2 CPU cores, enough to learn the synthetic tumours."""

    short_epochs = 6
    short_iterations = 25
    short_val_iterations = 2
