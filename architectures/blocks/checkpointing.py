"""Activation checkpointing of a block, switched by the network that owns it.

``torch.utils.checkpoint`` (non-reentrant) keeps only the block's inputs in the forward pass and recomputes the
block in the backward pass: the activations inside it are not held between the passes, at the cost of a second
forward of that block. The networks apply it to blocks that hold much activation memory and are cheap to recompute;
the state dict does not change.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils.checkpoint import checkpoint

Output = TypeVar("Output")


def checkpointed(function: Callable[..., Output], *args, enabled: bool) -> Output:
    """``function(*args)``, through ``torch.utils.checkpoint`` (``use_reentrant=False``) when ``enabled`` and
    gradients are being recorded (the caller passes ``enabled=self.activation_checkpointing and self.training``)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *args, use_reentrant=False)
    return function(*args)
