"""The shared base of every nnunet-ext trainer.

A trainer of this package is a small subclass that names its network (``build_network_architecture``) and the
recipe of the original work where it differs from nnU-Net's default. Everything else lives here, once:

* the dimension check (a 2D-only network asked for ``3d_fullres`` fails early, naming the configurations that work);
* a patch-size hook that edits the plans *before* ``nnUNetTrainer.__init__``, as nnU-Net's Primus trainers do, so
  the training loader, ``plans.json`` in the results folder and the predictor all see the same patch;
* deep-supervision scales taken from the network itself, and per-output loss weights around nnU-Net's own losses;
* the optimizer step with a per-trainer gradient-clipping norm (autocast and GradScaler only on CUDA, as upstream);
* the network's parameter count and MACs at the patch size in the training log;
* preemption safety (``PreemptionSafeMixin`` of ``preemption.py``, also used by ``nnUNetTrainerPreemptible``):
  atomic, frequent checkpoints, a clean stop with exit status 75 on SIGTERM/SIGUSR1, and ``--c`` that survives a
  damaged folder.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
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
from nnunet_ext.trainers.preemption import PreemptionSafeMixin


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
