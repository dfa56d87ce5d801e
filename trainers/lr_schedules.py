"""Learning-rate schedules of the trainers, kept together as nnU-Net keeps ``training/lr_scheduler/``.

nnU-Net steps a trainer's scheduler once per epoch with the epoch number, so every schedule here is a pure
function of that number and survives ``--c`` resumption. ``EpochLRScheduler`` holds the stepping; a schedule only
says which learning rate an epoch gets (``lr_at``). The warm-up + poly schedule is nnU-Net's own two schedulers.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from nnunetv2.training.lr_scheduler.warmup import Lin_incr_LRScheduler, PolyLRScheduler_offset


class EpochLRScheduler(LRScheduler):
    """Sets every parameter group's learning rate to ``lr_at(epoch)`` at each ``step(epoch)``; without an epoch
    (``None`` or -1, as torch's own first step passes) it counts the steps itself, as nnU-Net's schedulers do.

    Args:
        optimizer: the optimizer whose learning rate is set.
        current_step: the epoch to start from (torch's ``last_epoch``); None starts afresh.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, current_step: int | None = None) -> None:
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of ``epoch``."""
        raise NotImplementedError

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class TwoPhaseLRScheduler(EpochLRScheduler):
    """``initial_lr`` for epochs before ``switch_epoch``, ``final_lr`` from it on (REC-UNet's two runs as one).

    Args:
        optimizer: the optimizer whose learning rate is set.
        initial_lr: learning rate of the first phase.
        final_lr: learning rate of the second phase.
        switch_epoch: first epoch of the second phase.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, final_lr: float, switch_epoch: int):
        self.initial_lr = initial_lr
        self.final_lr = final_lr
        self.switch_epoch = switch_epoch
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.initial_lr if epoch < self.switch_epoch else self.final_lr


class WarmupConstantCosineLRScheduler(EpochLRScheduler):
    """Linear warm-up from ``initial_lr * final_factor`` to ``initial_lr``, constant, then cosine decay back to
    ``initial_lr * final_factor`` at ``max_steps`` (S2CA-Net's schedule).

    Args:
        optimizer: the optimizer whose learning rate is set.
        initial_lr: peak learning rate.
        warmup_steps: steps of the linear warm-up (0: none).
        constant_steps: steps at the peak after the warm-up.
        max_steps: total steps; the decay ends here.
        final_factor: start of the warm-up and end of the decay, relative to ``initial_lr``.
        current_step: the step to start from; None starts afresh.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, warmup_steps: int, constant_steps: int,
                 max_steps: int, final_factor: float = 1e-3, current_step: int | None = None) -> None:
        self.initial_lr = initial_lr
        self.warmup_steps = warmup_steps
        self.constant_steps = constant_steps
        self.max_steps = max_steps
        self.final_factor = final_factor
        super().__init__(optimizer, current_step)

    def lr_at(self, epoch: int) -> float:
        low = self.initial_lr * self.final_factor
        if epoch < self.warmup_steps:
            return low + (self.initial_lr - low) * epoch / self.warmup_steps
        decay_start = self.warmup_steps + self.constant_steps
        if epoch < decay_start:
            return self.initial_lr
        progress = min(1.0, (epoch - decay_start) / max(1, self.max_steps - 1 - decay_start))
        return low + (self.initial_lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupPolyLRScheduler(Lin_incr_LRScheduler):
    """Linear warm-up over ``warmup_epochs``, then nnU-Net's polynomial decay to 0 at ``max_epochs``; both phases
    are nnU-Net's own schedulers (``nnunetv2.training.lr_scheduler.warmup``), as its Primus trainers use them.

    Args:
        optimizer: the optimizer whose learning rate is set.
        initial_lr: learning rate at the end of the warm-up.
        warmup_epochs: epochs of the linear warm-up.
        max_epochs: total epochs; the decay reaches 0 here.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, warmup_epochs: int, max_epochs: int):
        self.warmup_epochs = warmup_epochs
        self.decay = PolyLRScheduler_offset(optimizer, initial_lr, max_epochs, warmup_epochs)
        super().__init__(optimizer, initial_lr, warmup_epochs)

    def step(self, current_step: int | None = None) -> None:
        if current_step is not None and current_step >= self.warmup_epochs:
            self.decay.step(current_step)
        else:
            super().step(current_step)
