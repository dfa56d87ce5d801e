"""The shared base of every nnunet-ext trainer.

A trainer of this package is a small subclass that names its network (``build_network_architecture``) and the
recipe of the original work where it differs from nnU-Net's default. Everything else lives here, once:

* the dimension check (a 2D-only network asked for ``3d_fullres`` fails early, naming the configurations that work);
* a patch-size hook that edits the plans *before* ``nnUNetTrainer.__init__``, as nnU-Net's Primus trainers do, so
  the training loader, ``plans.json`` in the results folder and the predictor all see the same patch;
* deep-supervision scales taken from the network itself, and per-output loss weights around nnU-Net's own losses;
* the optimizer step with a per-trainer gradient-clipping norm (autocast and GradScaler only on CUDA, as upstream);
* the network's parameter count and MACs at the patch size in the training log.
"""
from __future__ import annotations

import torch
from torch import autocast, nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.lr_scheduler.warmup import Lin_incr_LRScheduler, PolyLRScheduler_offset
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_ext.architectures.profiling import count_macs, count_parameters


class UnsupportedConfigurationError(ValueError):
    """A configuration whose dimensionality the trainer's network cannot process."""


class WarmupPolyLRScheduler(Lin_incr_LRScheduler):
    """Linear warm-up over ``warmup_epochs``, then nnU-Net's polynomial decay to 0 at ``max_epochs``.

    nnU-Net steps schedulers once per epoch with the epoch number, so the schedule is a pure function of that
    number and survives ``--c`` resumption. Both phases are nnU-Net's own schedulers.
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


class nnUNetTrainerExt(nnUNetTrainer):
    """Base trainer of nnunet-ext. Subclasses set the class constants and override ``build_network_architecture``.

    Class constants (the static builder and the dimension check read them, so they are never instance state):
        network_class: the architecture class, for ``nnunet-ext list`` and the deep-supervision scales.
        supported_dims: spatial dimensionalities the network handles, (2,), (3,) or (2, 3).
        grad_clip_norm: gradient-norm clipping in ``train_step`` (nnU-Net uses 12).
    """

    network_class: type[nn.Module] | None = None
    supported_dims: tuple[int, ...] = (2, 3)
    grad_clip_norm: float = 12.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.check_configuration(plans, configuration)
        original_patch = list(PlansManager(plans).get_configuration(configuration).patch_size)
        adjusted_patch = [int(p) for p in self.adjust_patch_size(original_patch)]
        if adjusted_patch != original_patch:
            plans["configurations"][configuration]["patch_size"] = adjusted_patch
        super().__init__(plans, configuration, fold, dataset_json, device)
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
        """Return the patch size to train and predict with, given the planned one. Default: unchanged."""
        return patch_size

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

    def _log_network_size(self) -> None:
        network = self._unwrapped_network()
        patch = tuple(self.configuration_manager.patch_size)
        was_training = network.training
        macs = count_macs(network, torch.zeros((1, self.num_input_channels, *patch), device=self.device))
        network.train(was_training)
        self.print_to_log_file(f"Network {type(network).__name__}: {count_parameters(network):,} parameters, "
                               f"{macs / 1e9:.2f} GMAC per forward pass at patch {list(patch)} (batch 1)")

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
