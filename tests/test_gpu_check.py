"""``benchmarks/gpu_check.py`` on CPU with ``--quick``: the GPU check's whole code path (synthetic dataset, nnU-Net's
planning, ``nnunet-ext plan`` per trainer, each trainer's own train_step at its plan, RccSegmentor's inference rate,
the deformable convolution against conv3d) on tiny data, so that the script a lent GPU runs never rots."""
import json
import subprocess
import sys
from pathlib import Path

from helpers import scrubbed_environment

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_every_trainer_at_its_plan(tmp_path):
    from nnunet_ext.trainers import TRAINERS

    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--workdir",
                             str(tmp_path / "work"), "--out", str(out)], env=scrubbed_environment(),
                            capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["trainer"]: row for row in report["training"]}
    assert set(rows) == {"nnUNetTrainer", *(t.__name__ for t in TRAINERS)}
    for name, row in rows.items():
        assert row["step_s"] > 0 and row["batch"] >= 2 and not row["compiled"]
        if name != "nnUNetTrainer":  # planned by nnunet-ext plan: the plan carries the memory model's prediction
            assert 0 < row["predicted_gb"] <= 8
            assert f"| {name} |" in result.stdout
    assert report["rcc_slices_per_s"] > 0
    assert report["deformable_conv"]["grid_sample"]["step_s"] > 0
    assert "the paper claims 136 slices/s" in result.stdout
