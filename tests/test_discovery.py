"""nnU-Net's stock trainer lookup finds our trainers in a fresh interpreter with a scrubbed environment."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import scrubbed_environment

from nnunet_ext import discovery

LOOKUP_PROBE = """
import json, os, pickle, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
cls = recursive_find_trainer_class_by_name(sys.argv[1])
print(json.dumps({"module": cls.__module__, "in_sys_modules": cls.__module__ in sys.modules,
                  "pickles": pickle.loads(pickle.dumps(cls)) is cls,
                  "nnUNet_extTrainer": os.environ.get("nnUNet_extTrainer")}))
"""


def _lookup(trainer_name: str, **extra_env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", LOOKUP_PROBE, trainer_name], env=scrubbed_environment(**extra_env),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_stock_lookup_finds_trainer_in_clean_environment():
    found = _lookup("nnUNetTrainerSegFormer3DVariant")
    assert found["module"] == "nnunet_ext.trainers.segformer3d_variant"
    assert found["in_sys_modules"] and found["pickles"]  # DDP spawn and data-loader workers need both


def test_existing_nnunet_exttrainer_value_is_kept(tmp_path):
    found = _lookup("nnUNetTrainerSegFormer3DVariant_Smoke", nnUNet_extTrainer=str(tmp_path))
    entries = found["nnUNet_extTrainer"].split(os.pathsep)
    assert entries[0] == str(tmp_path)
    assert os.path.realpath(entries[-1]) == os.path.realpath(discovery.TRAINER_LOOKUP_DIR)


def test_lookup_folder_holds_exactly_one_uniquely_named_module():
    entries = sorted(p.name for p in discovery.TRAINER_LOOKUP_DIR.iterdir() if p.name != "__pycache__")
    assert entries == ["nnunet_ext_trainers.py"]


def test_activate_appends_once(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", "/some/user/folder")
    discovery.activate()
    discovery.activate()
    assert os.environ["nnUNet_extTrainer"] == os.pathsep.join(["/some/user/folder",
                                                              str(discovery.TRAINER_LOOKUP_DIR)])
    monkeypatch.delenv("nnUNet_extTrainer")
    assert not discovery.is_active()


def test_trainer_names_never_contain_double_underscore():
    from nnunet_ext.catalog import trainer_classes

    names = list(trainer_classes())
    assert "nnUNetTrainerSegFormer3DVariant" in names
    assert not [n for n in names if "__" in n]  # nnU-Net splits result folder names on '__'


def test_regular_wheel_ships_the_pth_hook_and_the_lookup_shim(tmp_path):
    """Editable installs are what the other tests use; a regular wheel must carry the same two pieces."""
    source = tmp_path / "source"  # pip builds in the tree it is given: keep build/ out of the checkout
    shutil.copytree(Path(__file__).resolve().parents[1], source,
                    ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    names = zipfile.ZipFile(next(tmp_path.glob("nnunet_ext-*.whl"))).namelist()
    assert "nnunet_ext-trainer-lookup.pth" in names
    assert "nnunet_ext/trainer_lookup/nnunet_ext_trainers.py" in names
    assert "nnunet_ext/trainers/segformer3d_variant.py" in names
    assert "nnunet_ext/architectures/blocks/attention_gate.py" in names
    assert not [n for n in names if n.startswith(("architectures/", "trainers/"))]  # nothing generic at top level
