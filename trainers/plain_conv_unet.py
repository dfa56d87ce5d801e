"""nnU-Net's default network, PlainConvUNet (dynamic-network-architectures), built as nnU-Net plans and builds it:
for a patch at isotropic spacing 1 (the default planner's topology) or from a plans.json. Shared by the baseline
trainers' listings and the benchmarks, which compare each architecture with it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

# nnU-Net's ExperimentPlanner defaults: 32·2^i features per stage, capped at 512 (2D) or 320 (3D), stages down to
# an edge of 4
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
MIN_EDGE = 4


def default_plain_conv_unet(patch: list[int], input_channels: int, num_classes: int,
                            deep_supervision: bool) -> tuple[nn.Module, list[int]]:
    """nnU-Net's default PlainConvUNet for ``patch`` (2 or 3 axes) at spacing 1 and the patch it runs on.

    The topology is the default planner's (``get_pool_and_conv_props``), 2 convolutions per stage, InstanceNorm +
    LeakyReLU; the returned patch is ``patch`` made divisible by the network's strides, as the planner makes it.
    """
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op, get_matching_instancenorm
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, planned_patch, _ = get_pool_and_conv_props([1.0] * len(patch), patch, MIN_EDGE, 999999)
    stages = len(strides)
    conv_op = convert_dim_to_conv_op(len(patch))
    network = PlainConvUNet(
        input_channels=input_channels, n_stages=stages,
        features_per_stage=[min(MAX_FEATURES[len(patch)], BASE_FEATURES * 2 ** i) for i in range(stages)],
        conv_op=conv_op, kernel_sizes=kernels, strides=strides, n_conv_per_stage=[2] * stages,
        num_classes=num_classes, n_conv_per_stage_decoder=[2] * (stages - 1), conv_bias=True,
        norm_op=get_matching_instancenorm(conv_op), norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
        dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=deep_supervision)
    return network, [int(p) for p in planned_patch]


def planned_plain_conv_unet(plans: str, configuration: str, input_channels: int, num_classes: int,
                            deep_supervision: bool) -> tuple[nn.Module, ConfigurationManager]:
    """The network of ``configuration`` in the plans.json at ``plans``, built as nnU-Net builds it
    (``get_network_from_plans``), and that configuration's ``ConfigurationManager``."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(plans).get_configuration(configuration)
    network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                     config.network_arch_init_kwargs_req_import, input_channels, num_classes,
                                     deep_supervision=deep_supervision)
    return network, config
