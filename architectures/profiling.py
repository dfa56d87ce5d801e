"""Parameter and MAC counting for the networks of this package.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linear layers, matrix products;
2 FLOPs per multiply-accumulate), so MACs = FLOPs / 2. Norms, activations, pooling and interpolation are not
counted. FlopCounterMode has no formula for several fused attention kernels (among them the CPU one that
``F.scaled_dot_product_attention`` dispatches to), which would make attention free; ``count_macs`` adds one.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def _attention_matmul_flops(query_shape: Sequence[int], key_shape: Sequence[int],
                            value_shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    """(batch·heads, query tokens, key tokens, query/key width, value width)."""
    batch_heads = math.prod(query_shape[:-2])
    return batch_heads, query_shape[-2], key_shape[-2], query_shape[-1], value_shape[-1]


def sdpa_forward_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int],
                       *args, **kwargs) -> int:
    """FLOPs of softmax(Q Kᵀ) V: the two matrix products, 2 FLOPs per multiply-accumulate (no causal discount)."""
    batch_heads, n_q, n_k, d_qk, d_v = _attention_matmul_flops(query_shape, key_shape, value_shape)
    return 2 * batch_heads * n_q * n_k * (d_qk + d_v)


def sdpa_backward_flops(grad_out_shape: Sequence[int], query_shape: Sequence[int], key_shape: Sequence[int],
                        value_shape: Sequence[int], *args, **kwargs) -> int:
    """FLOPs of the attention backward: recomputed Q Kᵀ, dV, dP, dQ and dK (as FlopCounterMode counts it for the
    CUDA kernels)."""
    batch_heads, n_q, n_k, d_qk, d_v = _attention_matmul_flops(query_shape, key_shape, value_shape)
    return 2 * batch_heads * n_q * n_k * (3 * d_qk + 2 * d_v)


def _uncounted_attention_ops() -> dict:
    """Attention ops that exist in this torch build and that FlopCounterMode has no formula for."""
    forward_ops = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable",
                   "_scaled_dot_product_attention_math_for_mps")
    mapping = {}
    for name in forward_ops:
        for op_name, formula in ((name, sdpa_forward_flops), (f"{name}_backward", sdpa_backward_flops)):
            op = getattr(torch.ops.aten, op_name, None)
            if op is not None and op not in flop_registry:
                mapping[op] = formula
    return mapping


ATTENTION_FLOP_FORMULAS = _uncounted_attention_ops()


def count_macs(module: nn.Module, input_shape_or_tensor: Sequence[int] | torch.Tensor,
               device: torch.device | str | None = None) -> int:
    """Multiply-accumulates of one forward pass of ``module`` (eval mode, no gradients), attention included.

    Args:
        module: the network; its training mode is restored afterwards.
        input_shape_or_tensor: an input tensor, or its shape (a zero tensor of that shape is used).
        device: device to run on; default: the device of the module's first parameter (CPU if none).
    """
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    if isinstance(input_shape_or_tensor, torch.Tensor):
        x = input_shape_or_tensor.to(device)
    else:
        x = torch.zeros(tuple(input_shape_or_tensor), device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOP_FORMULAS) as counter:
            module(x)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2
