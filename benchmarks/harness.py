"""What the benchmarks share: each measurement in a fresh subprocess of the calling script, a timing and peak-memory
loop, nnU-Net's PlainConvUNet as the reference, and tables with ratios.

A script declares its networks (``Model``) and inputs; ``compare_training`` then measures training steps of each
network against nnU-Net's PlainConvUNet at the same patch (``--worker MODEL`` runs one measurement).

Peak memory: CUDA, ``torch.cuda.max_memory_allocated`` over the measured calls (warm-up included) minus what was
allocated before them; CPU, the growth of the process' peak RSS (``resource.getrusage``) over the same span.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

# a column: its title, its format spec (alignment and width) and the text of a row's value
Column = tuple[str, str, Callable[[dict], str]]


def run_worker(script: str, argv: Sequence[str], worker: Sequence[str], label: str,
               stderr_tail: int | None = None) -> dict:
    """Runs ``script argv --worker worker`` with this Python and returns the JSON of its last stdout line; raises
    naming ``label`` and the worker's stderr (its last ``stderr_tail`` characters) when it fails."""
    result = subprocess.run([sys.executable, script, *argv, "--worker", *worker], check=False, capture_output=True,
                            text=True)
    if result.returncode != 0:
        stderr = result.stderr if stderr_tail is None else result.stderr[-stderr_tail:]
        raise RuntimeError(f"measuring {label} failed:\n{stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def autocast(device: torch.device) -> AbstractContextManager:
    """fp16 autocast on CUDA, as nnU-Net trains and predicts; nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_calls(call: Callable[[], object], device: torch.device, warmup: int, steps: int) -> dict:
    """Calls ``call`` ``warmup`` + ``steps`` times: the median wall (``step_s``) and process CPU (``cpu_s``) seconds
    of the last ``steps`` calls, and the peak memory growth over all of them (``peak_bytes``)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _peak_rss_bytes()
    times, cpu_times = [], []
    for i in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss_bytes()) - base
    return {"step_s": statistics.median(times), "cpu_s": statistics.median(cpu_times), "peak_bytes": peak}


def plain_conv_unet(args: argparse.Namespace, patch: list[int],
                    deep_supervision: bool) -> tuple[nn.Module, list[int], object]:
    """nnU-Net's PlainConvUNet: the one of ``args.configuration`` in ``args.plans`` if given (with the plan's patch
    and configuration), else the default planner's for ``patch`` (with the divisible patch and no configuration)."""
    # imported here: nnU-Net reads its folder variables on import, which gpu_check.py sets first
    from nnunet_ext.trainers.plain_conv_unet import default_plain_conv_unet, planned_plain_conv_unet

    if args.plans:
        network, config = planned_plain_conv_unet(args.plans, args.configuration, args.channels, args.classes,
                                                  deep_supervision)
        return network, list(config.patch_size), config
    network, planned_patch = default_plain_conv_unet(patch, args.channels, args.classes, deep_supervision)
    return network, planned_patch, None


def ratio(row: dict, reference: dict, key: str) -> float:
    """``row[key] / reference[key]``; a reference peak memory below one byte counts as one."""
    return row[key] / (max(reference[key], 1) if key == "peak_bytes" else reference[key])


def ratios_text(row: dict, reference: dict, fields: Sequence[tuple[str, str]], digits: int = 3,
                separator: str = "  ", unit: str = "") -> str:
    """'label ratio' for each (label, key) of ``fields``, e.g. 'params 0.512  memory 1.300'."""
    return separator.join(f"{label} {ratio(row, reference, key):.{digits}f}{unit}" for label, key in fields)


def print_table(rows: Sequence[dict], columns: Sequence[Column], rule: bool = True) -> None:
    """A header, a rule under it (``rule``) and a line per row, columns separated by one space."""
    header = " ".join(f"{title:{spec}}" for title, spec, _ in columns)
    print(header)
    if rule:
        print("-" * len(header))
    for row in rows:
        print(" ".join(f"{text(row):{spec}}" for _, spec, text in columns))


def gmac_column(width: int) -> Column:
    return "GMAC", f">{width}", lambda row: f"{row['macs'] / 1e9:.2f}"


def peak_mib_column(width: int) -> Column:
    return "peak MiB", f">{width}", lambda row: f"{row['peak_bytes'] / 2 ** 20:.0f}"


def add_run_arguments(parser: argparse.ArgumentParser, unit: str, cpu_steps: int, cpu_warmup: int) -> None:
    """--device, --steps, --warmup and --threads; ``unit`` names what is timed ('steps', 'passes')."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help=f"timed {unit} (default: {cpu_steps} on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help=f"untimed {unit} first (default: {cpu_warmup} on CPU, 5 on CUDA)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")


def resolve_run_arguments(args: argparse.Namespace, cpu_steps: int, cpu_warmup: int) -> bool:
    """Fills in the device's default --steps and --warmup, applies --threads; True on CUDA."""
    cuda = args.device == "cuda"
    args.steps = args.steps or (20 if cuda else cpu_steps)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else cpu_warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    return cuda


def add_plans_arguments(parser: argparse.ArgumentParser, configuration: str) -> None:
    """--plans and --configuration: the plan whose U-Net is the reference."""
    parser.add_argument("--plans", help="plans.json whose U-Net is the reference")
    parser.add_argument("--configuration", default=configuration, help="configuration in --plans")


@dataclass(frozen=True)
class Model:
    """A network to measure: ``build(args)`` returns it and the patch it runs on (given ``args.patch``, the
    reference's); ``context()`` is entered around building and measuring it (e.g. to patch in the original's
    formulation); ``skip_flag`` adds an option that leaves it out."""

    name: str
    build: Callable[[argparse.Namespace], tuple[nn.Module, list[int]]]
    context: Callable[[], AbstractContextManager] = nullcontext
    skip_flag: str | None = None
    skip_help: str | None = None


def _reference(args: argparse.Namespace) -> tuple[nn.Module, list[int]]:
    network, patch, _ = plain_conv_unet(args, args.patch, deep_supervision=True)
    if args.plans and args.patch:
        return network, args.patch
    return network, patch


REFERENCE = Model("PlainConvUNet", _reference)


@dataclass(frozen=True)
class TrainingComparison:
    """Training steps of ``models`` against nnU-Net's PlainConvUNet at one patch: parameters, MACs at batch 1,
    fwd+bwd time and peak memory, a table and the ratios to PlainConvUNet.

    ``contrast`` = (title, model, against) adds a line comparing two of the models; ``cpu_column`` shows process
    CPU time too; ``progress`` writes each measurement to stderr."""

    script: str
    description: str
    models: Sequence[Model]
    cpu_patch: list[int]
    cuda_patch: list[int]
    channels: int
    classes: int
    configuration: str
    cpu_steps: int
    name_width: int = 16
    patch_width: int = 10
    cpu_column: bool = False
    progress: bool = False
    contrast: tuple[str, str, str] | None = None
    all_models: Sequence[Model] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "all_models", (REFERENCE, *self.models))

    def parse_arguments(self) -> argparse.Namespace:
        axes = ("D", "H", "W")[-len(self.cpu_patch):]
        parser = argparse.ArgumentParser(description=self.description)
        parser.add_argument("--patch", type=int, nargs=len(axes), metavar=axes,
                            help=f"patch size (default: {' '.join(map(str, self.cpu_patch))} on CPU, "
                                 f"{' '.join(map(str, self.cuda_patch))} on CUDA, the plan's with --plans)")
        parser.add_argument("--batch", type=int, default=2)
        parser.add_argument("--channels", type=int, default=self.channels)
        parser.add_argument("--classes", type=int, default=self.classes)
        add_run_arguments(parser, "steps", self.cpu_steps, 1)
        add_plans_arguments(parser, self.configuration)
        for model in self.models:
            if model.skip_flag:
                parser.add_argument(model.skip_flag, action="store_true", help=model.skip_help)
        parser.add_argument("--worker", choices=[m.name for m in self.all_models], help=argparse.SUPPRESS)
        args = parser.parse_args()
        cuda = resolve_run_arguments(args, self.cpu_steps, 1)
        if args.patch is None and not args.plans:
            args.patch = self.cuda_patch if cuda else self.cpu_patch
        return args

    def measure(self, model: Model, args: argparse.Namespace) -> dict:
        """Runs in a fresh subprocess: time and peak memory of training steps, then parameters and MACs."""
        from nnunet_ext.architectures.profiling import count_macs, count_parameters

        torch.manual_seed(0)
        device = torch.device(args.device)
        with model.context():
            network, patch = model.build(args)
            network = network.to(device).train()
            x = torch.randn(args.batch, args.channels, *patch, device=device)

            def step() -> None:
                network.zero_grad(set_to_none=True)
                with autocast(device):
                    outputs = network(x)
                    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                    loss = sum(o.float().mean() for o in outputs)
                loss.backward()

            timing = measure_calls(step, device, args.warmup, args.steps)
            network.zero_grad(set_to_none=True)
            macs = count_macs(network, (1, args.channels, *patch), device=device)
        return {"model": model.name, "patch": patch, "params": count_parameters(network), "macs": macs, **timing}

    def print_report(self, rows: list[dict], args: argparse.Namespace) -> None:
        reference = rows[0]
        threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ", fp16 autocast"
        timing = " (wall and process CPU time)" if self.cpu_column else ""
        print(f"device {args.device}{threads}; batch {args.batch}, {args.channels} channel(s), {args.classes} classes; "
              f"fwd+bwd median of {args.steps} steps after {args.warmup} warm-up{timing}; MACs at batch 1")
        columns: list[Column] = [
            ("network", f"<{self.name_width}", lambda row: row["model"]),
            ("patch", f"<{self.patch_width}", lambda row: "x".join(str(p) for p in row["patch"])),
            ("params", ">12", lambda row: f"{row['params']:,}"), gmac_column(9),
            ("fwd+bwd s", ">10", lambda row: f"{row['step_s']:.3f}")]
        if self.cpu_column:
            columns.append(("CPU s", ">8", lambda row: f"{row['cpu_s']:.2f}"))
        print_table(rows, [*columns, peak_mib_column(10)])
        fields = [("params", "params"), ("MACs", "macs"), ("time", "step_s"),
                  *([("CPU time", "cpu_s")] if self.cpu_column else []), ("memory", "peak_bytes")]
        print("\nratios to PlainConvUNet (lower is cheaper/faster):")
        for row in rows[1:]:
            print(f"  {row['model']:<{self.name_width}} {ratios_text(row, reference, fields)}")
        by_name = {row["model"]: row for row in rows}
        if self.contrast and self.contrast[1] in by_name:
            title, model, against = self.contrast
            mine, other = by_name[model], by_name[against]
            print(f"\n{title}: time x{ratio(mine, other, 'step_s'):.2f}, "
                  f"memory x{ratio(mine, other, 'peak_bytes'):.2f}")

    def main(self) -> None:
        args = self.parse_arguments()
        models = {model.name: model for model in self.all_models}
        if args.worker:
            print(json.dumps(self.measure(models[args.worker], args)))
            return
        skip_flags = {model.skip_flag for model in self.models if model.skip_flag}
        argv = [a for a in sys.argv[1:] if a not in skip_flags]
        reference = self._run(REFERENCE, argv)
        if args.patch is not None and list(reference["patch"]) != list(args.patch):
            print(f"note: nnU-Net's topology needs a patch divisible by its strides: {args.patch} -> "
                  f"{reference['patch']}, used for all networks")
        # every network runs at the reference's patch (the plan's, or the requested one made divisible)
        argv = argv + ["--patch", *map(str, reference["patch"])]
        skipped = {model.name for model in self.models
                   if model.skip_flag and getattr(args, model.skip_flag.lstrip("-").replace("-", "_"))}
        rows = [reference] + [self._run(model, argv) for model in self.models if model.name not in skipped]
        self.print_report(rows, args)

    def _run(self, model: Model, argv: list[str]) -> dict:
        row = run_worker(self.script, argv, [model.name], model.name, stderr_tail=3000)
        if self.progress and model is not REFERENCE:
            print(f"measured {model.name}: {json.dumps(row)}", file=sys.stderr)
        return row
