"""What cropping to the masks' bounding box saves in HD95/NSD: the same masks measured on the bounding box plus one
voxel and on the whole image, for both surface definitions.

Usage: python benchmarks/surface_metrics_crop.py [--shape 100 256 256] [--spacing 2.5 0.8 0.8] [--radius-mm 20]
[--repeats 3]

One run: a sphere (a tumour-sized structure) and the same sphere shifted by (1, 3, 2) voxels in an image of
``--shape`` voxels, measured by ``nnunet_ext.surface_metrics.surface_metrics`` with ``crop=True`` (the default)
and ``crop=False``. Prints the CPU seconds of each (best of ``--repeats``), the ratio, and checks that both give
the same values.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from nnunet_ext.surface_metrics import SURFACE_DEFINITIONS, element_measure_table, surface_metrics


def _masks(shape: list[int], spacing: list[float], radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij", sparse=True)
    centre = np.asarray(shape) / 2
    squared = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing))
    reference = squared <= radius_mm ** 2
    return reference, np.roll(reference, (1, 3, 2), axis=(0, 1, 2))


def _cpu_seconds(function, repeats: int) -> tuple[float, tuple[float, float]]:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        result = function()
        times.append(time.process_time() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 256, 256])
    parser.add_argument("--spacing", type=float, nargs=3, default=[2.5, 0.8, 0.8])
    parser.add_argument("--radius-mm", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reference, prediction = _masks(args.shape, args.spacing, args.radius_mm)
    element_measure_table(tuple(args.spacing))  # built once per spacing, not part of either timing
    print(f"image {'x'.join(map(str, args.shape))} voxels, spacing {args.spacing} mm, sphere of {args.radius_mm:g} mm "
          f"({int(reference.sum())} voxels); CPU seconds, best of {args.repeats}")
    print("| definition | whole image (s) | bounding box (s) | speed-up | HD95 (mm) | NSD @ 2 mm |")
    print("|---|---|---|---|---|---|")
    for definition in SURFACE_DEFINITIONS:
        whole, whole_values = _cpu_seconds(lambda: surface_metrics(
            reference, prediction, args.spacing, 2.0, definition=definition, crop=False), args.repeats)
        cropped, cropped_values = _cpu_seconds(lambda: surface_metrics(
            reference, prediction, args.spacing, 2.0, definition=definition), args.repeats)
        assert np.allclose(whole_values, cropped_values), (whole_values, cropped_values)
        print(f"| {definition} | {whole:.3f} | {cropped:.3f} | {whole / cropped:.1f}x | {cropped_values[0]:.3f} | "
              f"{cropped_values[1]:.4f} |")


if __name__ == "__main__":
    main()
