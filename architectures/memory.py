"""Memory of one training step of any network, from a trace without data.

``estimate_training_memory`` returns the peak bytes of one training step (forward, loss, backward, optimizer step)
of an ``nn.Module`` at an input shape, with the parts that make it up (parameters, gradients, optimizer state,
activations kept for the backward pass). Nothing is computed on data and no real weights are allocated:

* the network is built on the meta device (a factory) or its parameters and buffers are swapped for fake ones for
  the duration of the trace (a built network; restored afterwards);
* the optimizer state is created as the first step creates it, then one training step runs under
  ``FakeTensorMode`` (torch's shape-propagating tensors, real autograd, real
  optimizer, real ``torch.utils.checkpoint``), so the trace holds exactly the tensors eager PyTorch holds: those
  autograd saves for the backward pass, the recomputation of checkpointed blocks, gradients as they accumulate,
  the optimizer's lazily created state, every transient output;
* a ``TorchDispatchMode`` below autograd registers the storage of every tensor an operator returns and a weak
  reference finaliser on it, so live bytes go up when a storage is created and down when the last tensor using it
  dies. The peak of that count is what ``torch.cuda.max_memory_allocated`` reports for the same step, up to the
  allocator's 512-byte rounding and the workspaces that kernels allocate internally (cuDNN, oneDNN).

Why this and not torch's ``torch.distributed._tools.mem_tracker.MemTracker``: that tool does the same storage
accounting but is a private API of the distributed package whose per-module bookkeeping we do not need; and no
tool can run a backward pass on fake CUDA tensors on a machine without a GPU (the autograd engine asks the CUDA
driver for its device). The trace therefore always runs on fake CPU tensors, and ``precision="amp"`` emulates
CUDA's autocast (``_CudaAutocastPolicy``): the ops CUDA runs in float16 (convolutions, linear layers, matrix
products, attention, PReLU) get float16 inputs, with the float16 copies of the weights cached for the forward pass
as autocast caches them; the ops CUDA runs in float32 (norms of layers and groups, softmax, exp/log/pow, sums,
interpolation, losses) get float32 inputs; grid_sample promotes; everything else runs in its input's dtype. CPU's
own autocast has different lists (layer and group norm, interpolation stay float16 there), so it serves only as the
switch that ``torch.utils.checkpoint`` saves and restores for its recomputation; the casting is ours. The tests
check the emulation against CUDA's real autocast on fake CUDA tensors, where a forward pass does run (same bytes
within 0.1 % for S2CA-Net and REC-UNet). Master weights, gradients and optimizer state stay
float32, as under nnU-Net's GradScaler; the loss scaling itself is not traced (a scalar).

``device_type`` is the device whose behaviour is emulated: "cuda" (the default, what planning is for) also makes
the optimizer use its multi-tensor (foreach) implementation, which PyTorch picks by default on CUDA and whose
weight decay makes a temporary copy of all gradients; "cpu" keeps the per-parameter loop PyTorch uses there (for
validation against measured CPU memory). Code paths that differ between CPU and CUDA inside the networks (the
CPU-only depthwise-convolution backward of ``blocks.depthwise``, the attention kernel's small saved statistics)
follow the CPU path.

Hook: a network class whose memory the generic trace gets wrong defines a method
``estimate_training_memory(self, input_shape, *, precision, optimizer_factory, loss_fn, device_type)`` returning a
``TrainingMemory`` (or None to fall back to the trace); it is called on the (meta-built) network instead of the
trace. None of the networks of this package needs it.

Validated against measured CPU memory by ``benchmarks/memory_model.py`` (``measure_training_memory``: peak tensor
bytes of real steps from torch's profiler). Where it falls short: memory that a kernel allocates inside one operator
is invisible to a trace at the operator level. On CPU this shows in RccSegmentor at small inputs: at 64² (batch 2,
pvt_v2_b0) the backward pass of the Feature Exploration Module's full 384-channel dilated convolutions takes
PyTorch's im2col path, whose 77 MB column buffer inside one ``convolution_backward`` puts the prediction 33 % below
the measured peak; from 96² on PyTorch picks a convolution kernel without that buffer and the prediction is within 6 %.
On CUDA the same role falls to cuDNN's workspaces (allocated through the caching allocator, so counted by
``torch.cuda.max_memory_allocated``); a GPU measurement (``benchmarks/gpu_check.py``) shows their size.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd.graph import _engine_run_backward
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

Precision = Literal["amp", "fp32"]
DeviceType = Literal["cuda", "cpu"]


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of one training step.

    Attributes:
        parameters: the network's parameters (float32 master weights).
        gradients: their gradients after the backward pass.
        optimizer_state: the optimizer's state tensors (momentum: 1× parameters; Adam: 2×).
        activations: what the forward pass and the loss keep alive for the backward pass (saved tensors, outputs,
            under amp the float16 weight copies), beyond parameters, optimizer state and input.
        peak: the most bytes alive at once during the step, all of the above, the input and the largest transient
            included.
    """

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    peak: int

    @property
    def peak_gb(self) -> float:
        return self.peak / 1e9


class _LiveTensorMemory(TorchDispatchMode):
    """Counts the bytes of the tensor storages alive, and their peak, for every operator below autograd."""

    def __init__(self) -> None:
        super().__init__()
        self._sizes: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def _release(self, nbytes: int) -> None:
        self.current -= nbytes

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._sizes:
            return
        nbytes = storage.nbytes()
        self._sizes[storage] = nbytes
        weakref.finalize(storage, self._release, nbytes)
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.track, out)
        return out


# CUDA's autocast policy (torch.amp docs, "CUDA Ops that can autocast to float16 / float32"), by the name of the
# torch function, functional or Tensor method that reaches it
_LOWER_PRECISION = frozenset((
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
    "conv_tbc", "prelu", "addmm", "addmv", "addr", "matmul", "__matmul__", "__rmatmul__", "einsum", "mm", "mv",
    "linear", "addbmm", "baddbmm", "bmm", "chain_matmul", "multi_dot", "linalg_vecdot",
    "scaled_dot_product_attention", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"))
_FLOAT32 = frozenset((
    "__pow__", "__rpow__", "__rdiv__", "__rtruediv__", "pow", "acos", "asin", "cosh", "erfinv", "exp", "expm1",
    "log", "log10", "log1p", "log2", "reciprocal", "rsqrt", "sinh", "tan", "softplus", "layer_norm", "group_norm",
    "norm", "normalize", "cosine_similarity", "cdist", "pdist", "dist", "renorm", "logsumexp", "interpolate",
    "upsample", "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "kl_div", "l1_loss",
    "smooth_l1_loss", "huber_loss", "mse_loss", "poisson_nll_loss", "cosine_embedding_loss", "hinge_embedding_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss"))
_FLOAT32_OUTPUT = frozenset(("softmax", "log_softmax", "softmin", "sum", "prod", "cumsum", "cumprod",
                             "vector_norm"))
_PROMOTE = frozenset(("grid_sample", "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "tensordot",
                      "index_put", "scatter_add"))


class _CudaAutocastPolicy(TorchFunctionMode):
    """CUDA's float16 autocast, applied to CPU tensors while CPU autocast is switched on (which only serves as the
    switch: every op runs with CPU autocast's own casting off)."""

    def __init__(self) -> None:
        super().__init__()
        self._weight_cache: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def clear_cache(self) -> None:
        self._weight_cache = WeakIdKeyDictionary()

    def _cast(self, value: Any, dtype: torch.dtype) -> Any:
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()) or value.dtype in (dtype, torch.float64):
            return value
        if value.is_leaf and value.requires_grad:  # autocast caches the casts of weights within its region
            if value not in self._weight_cache:
                self._weight_cache[value] = value.to(dtype)
            return self._weight_cache[value]
        return value.to(dtype)

    def _apply_policy(self, name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if name in _LOWER_PRECISION:
            dtype = torch.float16
        elif name in _FLOAT32:
            dtype = torch.float32
        elif name in _FLOAT32_OUTPUT:
            tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
            has_dtype = "dtype" in kwargs or any(isinstance(a, torch.dtype) for a in args)
            if tensors and tensors[0].dtype == torch.float16 and not has_dtype:
                kwargs = {**kwargs, "dtype": torch.float32}
            return args, kwargs
        elif name in _PROMOTE:
            floats = [a.dtype for a in tree_flatten((args, kwargs))[0]
                      if isinstance(a, torch.Tensor) and a.is_floating_point()]
            dtype = torch.float32 if torch.float32 in floats else torch.float16
        else:
            return args, kwargs
        return tree_map(lambda a: self._cast(a, dtype), args), tree_map(lambda a: self._cast(a, dtype), kwargs)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        with torch.autocast("cpu", enabled=False):
            args, kwargs = self._apply_policy(getattr(func, "__name__", ""), args, kwargs)
            return func(*args, **kwargs)


@contextmanager
def _autocast(precision: Precision, policy: _CudaAutocastPolicy) -> Iterator[None]:
    if precision == "fp32":
        yield
        return
    with torch.autocast("cpu", dtype=torch.float16):
        yield
    policy.clear_cache()


def default_optimizer(parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """nnU-Net's optimizer: SGD, momentum 0.99, Nesterov, weight decay 3e-5 (one state tensor per parameter)."""
    return torch.optim.SGD(parameters, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)


def default_loss(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of the float32 means of the output(s)."""
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return sum(o.float().mean() for o in outputs)


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    storages = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


@contextmanager
def _fake_state(network: nn.Module, live: _LiveTensorMemory, device: str = "cpu") -> Iterator[list[nn.Parameter]]:
    """Swap the network's parameters and buffers for empty fake tensors on ``device`` of the same shapes and dtypes
    (counted as live memory), restoring the originals afterwards. Yields the fake parameters (shared ones once)."""
    replaced: dict[int, torch.Tensor] = {}
    originals = []

    def fake_of(tensor: torch.Tensor, parameter: bool) -> torch.Tensor:
        if id(tensor) not in replaced:
            fake = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=device)
            live.track(fake)
            replaced[id(tensor)] = nn.Parameter(fake, tensor.requires_grad) if parameter else fake
        return replaced[id(tensor)]

    for module in network.modules():
        for slots, parameter in ((module._parameters, True), (module._buffers, False)):
            for name, tensor in slots.items():
                if tensor is not None:
                    originals.append((slots, name, tensor))
                    slots[name] = fake_of(tensor, parameter)
    try:
        yield [p for p in replaced.values() if isinstance(p, nn.Parameter)]
    finally:
        for slots, name, tensor in originals:
            slots[name] = tensor


def _prefer_foreach(optimizer: torch.optim.Optimizer, device_type: DeviceType) -> None:
    """PyTorch's default choice of optimizer implementation on ``device_type`` (it cannot see it on fake tensors)."""
    for group in optimizer.param_groups:
        if "foreach" in group and group["foreach"] is None:
            group["foreach"] = device_type == "cuda"


def _trace(network: nn.Module, input_shape: Sequence[int], precision: Precision,
           optimizer_factory: Callable, loss_fn: Callable, device_type: DeviceType) -> TrainingMemory:
    policy = _CudaAutocastPolicy()
    with ExitStack() as stack:
        stack.enter_context(FakeTensorMode())
        live = stack.enter_context(_LiveTensorMemory())
        if precision == "amp":
            stack.enter_context(policy)
        parameters = stack.enter_context(_fake_state(network, live))
        optimizer = optimizer_factory(parameters)
        _prefer_foreach(optimizer, device_type)
        network.train()
        _create_optimizer_state(optimizer, parameters)
        activations = _step(network, input_shape, precision, policy, optimizer, loss_fn, live)
        state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        result = TrainingMemory(
            parameters=_unique_bytes(parameters),
            gradients=_unique_bytes(p.grad for p in parameters if p.grad is not None),
            optimizer_state=_unique_bytes(state), activations=activations, peak=live.peak)
    return result


def _create_optimizer_state(optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter]) -> None:
    """One optimizer step on zero gradients: the state the first training step creates, which every later one
    holds throughout (momentum buffers, Adam's moments)."""
    for parameter in parameters:
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _step(network: nn.Module, input_shape: Sequence[int], precision: Precision, policy: _CudaAutocastPolicy,
          optimizer: torch.optim.Optimizer, loss_fn: Callable, live: _LiveTensorMemory) -> int:
    """One training step as nnU-Net's ``train_step`` runs it; returns the activation bytes after the loss."""
    optimizer.zero_grad(set_to_none=True)
    data = torch.empty(tuple(input_shape))
    before = live.current
    with _autocast(precision, policy):
        output = network(data)
        loss = loss_fn(output)
    activations = live.current - before
    # straight to the engine: loss.backward() and torch.autograd.backward are torch functions, whose handler would
    # run the whole backward pass (and the recomputation of checkpointed blocks in it) outside the autocast emulation
    _engine_run_backward((loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True,
                         accumulate_grad=True)
    optimizer.step()
    return activations


def _build_on_meta(network: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    if isinstance(network, nn.Module):
        return network
    with torch.device("meta"):
        return network()


def estimate_training_memory(network: nn.Module | Callable[[], nn.Module], input_shape: Sequence[int], *,
                             precision: Precision = "fp32",
                             optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
                             loss_fn: Callable[[Any], torch.Tensor] | None = None,
                             device_type: DeviceType = "cuda") -> TrainingMemory:
    """Peak memory of one training step of ``network`` on a batch of ``input_shape``, from a trace without data.

    Args:
        network: the network, or a function that builds it (called on the meta device: no weights allocated).
            A built network is only borrowed: its parameters are swapped for fake ones during the trace and put
            back. It is put in training mode.
        input_shape: (batch, channels, *spatial).
        precision: "amp" (CUDA float16 autocast, float32 master weights, as nnU-Net trains on CUDA) or "fp32".
        optimizer_factory: builds the optimizer from the parameters; default ``default_optimizer`` (nnU-Net's SGD).
        loss_fn: takes the network's output (a tensor or a list for deep supervision) and returns the loss; it runs
            inside the autocast region, as nnU-Net's loss does, and tensors it creates (targets) are counted.
            Default ``default_loss``.
        device_type: the device whose behaviour is emulated (see the module docstring): "cuda" or "cpu".

    Returns:
        ``TrainingMemory`` in bytes; ``peak`` is what the step needs.
    """
    if precision not in ("amp", "fp32"):
        raise ValueError(f"precision must be 'amp' or 'fp32', got {precision!r}")
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}")
    if len(input_shape) < 3:
        raise ValueError(f"input_shape is (batch, channels, *spatial), got {list(input_shape)}")
    module = _build_on_meta(network)
    override = getattr(type(module), "estimate_training_memory", None)
    if override is not None:
        result = override(module, input_shape, precision=precision, optimizer_factory=optimizer_factory,
                          loss_fn=loss_fn, device_type=device_type)
        if result is not None:
            return result
    return _trace(module, input_shape, precision, optimizer_factory or default_optimizer, loss_fn or default_loss,
                  device_type)


def _allocation_peak(profiler: torch.profiler.profile) -> int:
    """Peak of the running sum of the CPU allocations (+) and frees (-) the profiler recorded."""
    events = sorted((e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def measure_training_memory(network: nn.Module, input_shape: Sequence[int], *,
                            optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
                            loss_fn: Callable[[Any], torch.Tensor] | None = None) -> int:
    """Measured peak tensor bytes of one real fp32 training step of ``network`` (on CPU), for validating
    ``estimate_training_memory(..., device_type="cpu")``.

    Two steps (random input, ``loss_fn``, backward, optimizer step; the first creates the optimizer state) run
    under ``torch.profiler`` with ``profile_memory=True``, which records every allocation and free of PyTorch's CPU
    allocator. The result is the bytes of the parameters and buffers plus the peak of the running sum of those
    allocations: tensor memory, as ``torch.cuda.max_memory_allocated`` counts it on a GPU (no allocator slack, no
    scratch memory that kernels allocate outside PyTorch's allocator). The profiler starts before anything the
    steps free is allocated, so no free goes unrecorded.
    """
    optimizer = (optimizer_factory or default_optimizer)(network.parameters())
    loss_fn = loss_fn or default_loss
    network.train()
    held = _unique_bytes([*network.parameters(), *network.buffers()])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(network(torch.randn(tuple(input_shape)))).backward()
            optimizer.step()
    return held + _allocation_peak(profiler)
