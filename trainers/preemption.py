"""Preemption safety for any ``nnUNetTrainer`` (``PreemptionSafeMixin``, used by ``nnUNetTrainerExt`` and
``nnUNetTrainerPreemptible``): atomic, frequent checkpoints, a clean stop with exit status ``EXIT_PREEMPTED`` (75) on
SIGTERM/SIGUSR1, and ``--c`` that survives a damaged folder.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import zipfile
from collections.abc import Sequence

import torch
import torch.distributed as dist
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import isfile, join

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

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
