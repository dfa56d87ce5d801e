"""Plug-in trainers of other installed packages (entry-point group ``nnunet_ext.trainers``).

examples/custom_architecture is installed with pip into a folder of its own that a scrubbed subprocess gets on
PYTHONPATH, like a user's ``pip install``; the stock nnU-Net commands then train and predict with its trainer.
Broken and clashing plug-ins are fake distributions (a ``*.dist-info`` folder beside a module), which
``importlib.metadata`` finds on the path like installed ones.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import run_command, scrubbed_environment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_architecture"
DATASET_ID = 920
PLUGIN = "nnunet-tinyunet 0.1.0"
TRAINER = "nnUNetTrainerTinyUNet"

LOOKUP_PROBE = """
import json, pickle, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
found = {}
for name in sys.argv[1:]:
    try:
        cls = recursive_find_trainer_class_by_name(name)
        found[name] = {"module": cls.__module__, "pickles": pickle.loads(pickle.dumps(cls)) is cls}
    except Exception as error:
        found[name] = {"error": f"{type(error).__name__}: {error}"}
print(json.dumps(found))
"""

CLASHING_MODULE = """
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerTinyUNet(nnUNetTrainer):
    pass


class nnUNetTrainerSegFormer3DVariant(nnUNetTrainer):
    pass


class nnUNetTrainerOnlyHere(nnUNetTrainer):
    pass
"""


@pytest.fixture(scope="module")
def example_install(tmp_path_factory) -> tuple[Path, Path]:
    """(source copy, target folder) of ``pip install --no-deps --target`` of examples/custom_architecture."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "custom_architecture"  # pip builds in the tree it is given: keep build/ out of the checkout
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return source, target


def _with_path(env: dict[str, str], *folders: Path) -> dict[str, str]:
    return {**env, "PYTHONPATH": os.pathsep.join(str(f) for f in folders)}


def _fake_distribution(site: Path, name: str, entry_point: str, module: str, source: str) -> None:
    """A distribution ``name`` 1.0 in ``site`` whose entry point ``entry_point`` names the module ``module``."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[nnunet_ext.trainers]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def bad_plugins(tmp_path_factory) -> Path:
    """A package whose trainer module fails to import, and one exporting names of the example and of ours."""
    site = tmp_path_factory.mktemp("bad_plugins")
    _fake_distribution(site, "broken-plugin", "broken", "broken_plugin_trainers",
                       'raise ImportError("needs mamba_ssm, which is not installed")\n')
    _fake_distribution(site, "clash-plugin", "clash", "clash_plugin_trainers", CLASHING_MODULE)
    return site


def test_example_package_passes_its_own_test(example_install, tmp_path):
    source, target = example_install
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests")],
                            cwd=tmp_path, env=_with_path(scrubbed_environment(), target), capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout


def test_plugin_scan_never_runs_at_interpreter_start_up(example_install, bad_plugins):
    probe = "import os, sys; print('nnunet_ext.plugins' in sys.modules, bool(os.environ.get('nnUNet_extTrainer')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            check=False, env=_with_path(scrubbed_environment(), example_install[1], bad_plugins))
    assert result.stdout.split() == ["False", "True"]  # the .pth hook ran, the scan did not
    assert "broken" not in result.stderr  # the broken plug-in costs nothing and says nothing before a lookup


def test_stock_train_and_predict_find_the_plugin_trainer(nnunet_env, example_install, tmp_path):
    from nnunet_ext.synthetic import make_synthetic_dataset

    env = _with_path(nnunet_env, example_install[1])
    folder = make_synthetic_dataset(DATASET_ID, dim=3, num_cases=2, num_test_cases=1, shape=(16, 32, 32),
                                    raw_dir=nnunet_env["nnUNet_raw"])
    dataset = str(DATASET_ID)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "3d_fullres", "-np", "1", "-npfp", "1"], env)
    run_command(["nnUNetv2_train", dataset, "3d_fullres", "all", "-tr", f"{TRAINER}_Smoke", "-device", "cpu"],
                {**env, "nnUNet_n_proc_DA": "0"})
    results = Path(nnunet_env["nnUNet_results"]) / folder.name / f"{TRAINER}_Smoke__nnUNetPlans__3d_fullres"
    assert (results / "fold_all" / "checkpoint_final.pth").is_file()
    log = "".join(p.read_text() for p in (results / "fold_all").glob("training_log_*.txt"))
    assert "Network TinyUNet:" in log  # nnUNetTrainerExt's hooks ran for the plug-in's trainer

    output = tmp_path / "predictions"
    run_command(["nnUNetv2_predict", "-i", str(folder / "imagesTs"), "-o", str(output), "-d", dataset,
                 "-c", "3d_fullres", "-tr", f"{TRAINER}_Smoke", "-f", "all", "-device", "cpu", "-npp", "0",
                 "-nps", "0", "--disable_progress_bar"], env)
    reference = next((folder / "labelsTs").glob("*.nii.gz"))
    prediction = sitk.ReadImage(str(output / reference.name))
    assert prediction.GetSize() == sitk.ReadImage(str(reference)).GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}


def test_list_shows_plugin_trainers_with_their_package(example_install):
    out = run_command(["nnunet-ext", "list"], _with_path(scrubbed_environment(), example_install[1])).stdout
    row = next(line for line in out.splitlines() if line.startswith(TRAINER + " "))
    assert PLUGIN in row and "TinyUNet" in row and "_Smoke" in row and "2d, 3d_fullres" in row
    assert "nnUNetTrainerSegFormer3DVariant " in out and "Discovery: active" in out


def test_broken_and_clashing_plugins_are_named_while_the_others_are_found(example_install, bad_plugins):
    names = [f"{TRAINER}_Smoke", "nnUNetTrainerSegFormer3DVariant_Smoke", "nnUNetTrainerOnlyHere", TRAINER,
             "nnUNetTrainerSegFormer3DVariant"]
    result = subprocess.run([sys.executable, "-c", LOOKUP_PROBE, *names], capture_output=True, text=True,
                            timeout=300, check=False,
                            env=_with_path(scrubbed_environment(), example_install[1], bad_plugins))
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])

    assert "broken-plugin 1.0" in result.stderr and "'broken = broken_plugin_trainers'" in result.stderr
    assert "needs mamba_ssm" in result.stderr  # the import error itself, so the user knows what to fix
    assert found[f"{TRAINER}_Smoke"] == {"module": "nnunet_tinyunet.trainers", "pickles": True}
    assert found["nnUNetTrainerSegFormer3DVariant_Smoke"]["module"] == "nnunet_ext.trainers.segformer3d_variant"
    assert found["nnUNetTrainerOnlyHere"]["module"] == "clash_plugin_trainers"

    plugin_clash, our_clash = found[TRAINER]["error"], found["nnUNetTrainerSegFormer3DVariant"]["error"]
    assert plugin_clash.startswith("TrainerNameClashError") and "clash-plugin 1.0" in plugin_clash
    assert PLUGIN in plugin_clash
    assert "clash-plugin 1.0" in our_clash and "nnunet-ext (nnunet_ext.trainers)" in our_clash


# ---- the contract, in-process ------------------------------------------------------------------------------------

@pytest.fixture
def fresh_scan(monkeypatch):
    """plugins.scan() is cached per process: start from an empty cache and leave one behind."""
    from nnunet_ext import plugins

    plugins.scan.cache_clear()
    yield plugins
    plugins.scan.cache_clear()


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    vars(module).update(attributes)
    return module


def test_what_an_entry_point_exports():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.plugins import trainers_exported_by
    from nnunet_ext.trainers import nnUNetTrainerExt

    mine = type("nnUNetTrainerMine", (nnUNetTrainerExt,), {"__module__": "mypkg.trainers"})
    helper = type("nnUNetTrainerHelper", (nnUNetTrainer,), {"__module__": "mypkg.base"})
    private = type("_nnUNetTrainerPrivate", (nnUNetTrainer,), {"__module__": "mypkg.trainers"})
    implicit = _module("mypkg.trainers", nnUNetTrainer=nnUNetTrainer, nnUNetTrainerExt=nnUNetTrainerExt,
                       nnUNetTrainerMine=mine, nnUNetTrainerHelper=helper, _nnUNetTrainerPrivate=private, x=1)
    assert trainers_exported_by(implicit) == [mine, helper]  # its own package's public trainers, not imported ones
    explicit = _module("mypkg.trainers", nnUNetTrainerMine=mine, nnUNetTrainerHelper=helper, x=1,
                       __all__=["nnUNetTrainerHelper", "x"])
    assert trainers_exported_by(explicit) == [helper]
    assert trainers_exported_by(mine) == [mine] and trainers_exported_by((mine, helper)) == [mine, helper]
    with pytest.raises(TypeError, match="not a module"):
        trainers_exported_by({"nnUNetTrainerMine": mine})


def test_catalog_resolves_plugin_trainers_and_refuses_ambiguous_names(example_install, bad_plugins, monkeypatch,
                                                                     fresh_scan):
    monkeypatch.syspath_prepend(str(bad_plugins))
    monkeypatch.syspath_prepend(str(example_install[1]))
    from nnunet_ext import catalog

    with pytest.warns(fresh_scan.PluginWarning) as warned:
        classes = catalog.trainer_classes()
    messages = "\n".join(str(w.message) for w in warned)
    assert "broken-plugin 1.0" in messages and f"'{TRAINER}' is exported by 2" in messages

    assert catalog.resolve_trainer(f"{TRAINER}_Smoke").__module__ == "nnunet_tinyunet.trainers"
    assert catalog.package_of(classes[f"{TRAINER}_Smoke"]) == PLUGIN
    assert TRAINER not in classes and "nnUNetTrainerSegFormer3DVariant" not in classes  # ambiguous: left out
    with pytest.raises(fresh_scan.TrainerNameClashError, match="clash-plugin 1.0.*nnunet-tinyunet 0.1.0"):
        catalog.resolve_trainer(TRAINER)
    with pytest.raises(catalog.UnknownTrainerError, match="nnUNetTrainerOnlyHere"):
        catalog.resolve_trainer("nnUNetTrainerNope")


def test_double_underscore_names_and_empty_plugins_are_skipped_with_a_warning(tmp_path, monkeypatch, fresh_scan):
    _fake_distribution(tmp_path, "odd-plugin", "odd", "odd_plugin_trainers", """
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


        class nnUNetTrainer__Odd(nnUNetTrainer):
            pass
    """)
    _fake_distribution(tmp_path, "empty-plugin", "empty", "empty_plugin_trainers", "VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(fresh_scan.PluginWarning) as warned:
        found = fresh_scan.scan()
    messages = "\n".join(str(w.message) for w in warned)
    assert "'nnUNetTrainer__Odd'" in messages and "'__'" in messages
    assert "empty-plugin 1.0" in messages and "exports no nnUNetTrainer subclass" in messages
    assert "nnUNetTrainer__Odd" not in found.trainers
