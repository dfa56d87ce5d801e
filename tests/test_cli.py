"""The ``nnunet-ext`` command as a user runs it: listing, synthetic data, the demo, and its errors."""
import json
import shutil

from helpers import run_command, scrubbed_environment

from nnunet_ext import cli


def test_list_shows_trainers_and_active_discovery():
    result = run_command(["nnunet-ext", "list"], scrubbed_environment())
    out = result.stdout
    assert "Warning" not in result.stderr, result.stderr  # timm's torch.jit deprecation is silenced where we import it
    assert "nnUNetTrainerSegFormer3DVariant" in out and "SegFormer3DVariant" in out
    assert "3d_fullres" in out and "_Smoke" in out
    assert "Discovery: active" in out


def test_synth_without_nnunet_raw_names_the_variable():
    result = run_command(["nnunet-ext", "synth", "5"], scrubbed_environment(), expect_success=False)
    assert result.returncode == 2 and "nnUNet_raw" in result.stderr and "Traceback" not in result.stderr
    assert "raw_dir" not in result.stderr  # the options a user has, not the Python function's arguments


def test_synth_refuses_an_existing_dataset_id_and_keeps_it(tmp_path):
    existing = tmp_path / "Dataset005_Mine"
    existing.mkdir()
    (existing / "dataset.json").write_text("{}")
    env = scrubbed_environment(nnUNet_raw=str(tmp_path))
    result = run_command(["nnunet-ext", "synth", "5", "--cases", "2"], env, expect_success=False)
    assert "--overwrite" in result.stderr and "Dataset005_Mine" in result.stderr
    assert "overwrite=True" not in result.stderr
    assert (existing / "dataset.json").read_text() == "{}"


def test_unknown_trainer_lists_the_available_ones(tmp_path):
    result = run_command(["nnunet-ext", "demo", "--workdir", str(tmp_path / "demo"), "--trainers", "nnUNetTrainerNope"],
                         scrubbed_environment(), expect_success=False)
    assert "Unknown trainer 'nnUNetTrainerNope'" in result.stderr
    assert "nnUNetTrainerSegFormer3DVariant" in result.stderr
    assert not (tmp_path / "demo").exists()


def test_demo_trains_every_3d_trainer_of_ours_and_the_baseline_last():
    from nnunet_ext.demo import _demo_trainers
    from nnunet_ext.trainers import TRAINERS

    trainers = _demo_trainers(None, baseline=True, quick=False)
    assert trainers[-1] == ("nnUNetTrainer", "nnUNetTrainer_Demo")
    ours = {name for name, _ in trainers[:-1]}
    assert {"nnUNetTrainerSegFormer3DVariant", "nnUNetTrainerS2CANet"} <= ours
    assert not ours & {"nnUNetTrainerRccSegmentor", "nnUNetTrainerRECUNet"}, "2D-only networks cannot run 3d_fullres"
    assert ours <= {t.__name__ for t in TRAINERS}
    assert _demo_trainers(["nnUNetTrainerS2CANet"], baseline=False, quick=True) == [
        ("nnUNetTrainerS2CANet", "nnUNetTrainerS2CANet_Smoke")]


def test_demo_table_has_a_row_per_trainer_baseline_included():
    from nnunet_ext.demo import DemoResult, format_table

    table = format_table([DemoResult("nnUNetTrainerSegFormer3DVariant", {"organ": 0.9, "tumour": 0.8}, 172.0, 4769488),
                          DemoResult("nnUNetTrainer", {"organ": 0.85, "tumour": 0.7}, 500.0, 30459119)], quick=False)
    assert "| nnUNetTrainerSegFormer3DVariant | 0.900 | 0.800 | 172 | 4,769,488 |" in table
    assert "| nnUNetTrainer | 0.850 | 0.700 | 500 | 30,459,119 |" in table


def test_quick_demo_runs_the_pipeline_and_writes_the_table(tmp_path):
    workdir = tmp_path / "demo"
    # one trainer is enough to test the demo's pipeline (the default trains every 3D one, --baseline adds one more)
    out = run_command(["nnunet-ext", "demo", "--quick", "--trainers", "nnUNetTrainerSegFormer3DVariant",
                       "--workdir", str(workdir)], scrubbed_environment()).stdout
    table = (workdir / "demo_results.md").read_text()
    assert "| nnUNetTrainerSegFormer3DVariant |" in table
    assert "Dice organ" in table and "Dice tumour" in table
    [result] = json.loads((workdir / "demo_results.json").read_text())
    assert result["trainer"] == "nnUNetTrainerSegFormer3DVariant" and set(result["dice"]) == {"organ", "tumour"}
    assert f"| {result['dice']['organ']:.3f} | {result['dice']['tumour']:.3f} |" in table
    assert "[1/" in out  # progress is printed while it runs
    assert len(list((workdir / "predictions" / "nnUNetTrainerSegFormer3DVariant_Smoke").glob("*.nii.gz"))) == 2

    rerun = run_command(["nnunet-ext", "demo", "--quick", "--trainers", "nnUNetTrainerSegFormer3DVariant",
                         "--workdir", str(workdir)], scrubbed_environment()).stdout
    assert "reusing the trained model" in rerun


def test_check_passes_and_names_each_bad_input(nnunet_env, planned_dataset, tmp_path):
    dataset = planned_dataset.name[7:10]
    check = ["nnunet-ext", "check", "-d", dataset, "-tr", "nnUNetTrainerSegFormer3DVariant"]
    ok = run_command(check + ["-c", "3d_fullres", "-i", str(planned_dataset / "imagesTs")], nnunet_env).stdout
    assert "2 case(s)" in ok and "can train and predict configuration '3d_fullres'" in ok

    extra_channel = tmp_path / "two_channels"
    extra_channel.mkdir()
    image = next((planned_dataset / "imagesTs").glob("*_0000.nii.gz"))
    for channel in ("0000", "0001"):
        shutil.copy(image, extra_channel / image.name.replace("_0000", f"_{channel}"))
    failures = {
        "channels": check + ["-c", "3d_fullres", "-i", str(extra_channel)],
        "2d": check + ["-c", "2d"],
        "dataset": ["nnunet-ext", "check", "-d", "998", "-c", "3d_fullres", "-tr", "nnUNetTrainer"],
    }
    messages = {key: run_command(command, nnunet_env, expect_success=False).stderr
                for key, command in failures.items()}
    assert "0000, 0001" in messages["channels"] and "1 channel(s)" in messages["channels"]
    assert "3D-only" in messages["2d"] and "3d_fullres" in messages["2d"]
    assert "Dataset '998' not found" in messages["dataset"] and planned_dataset.name in messages["dataset"]
    missing_env = {k: v for k, v in nnunet_env.items() if k != "nnUNet_results"}
    assert "nnUNet_results" in run_command(failures["2d"], missing_env, expect_success=False).stderr


def test_label_names_use_the_keys_nnunets_evaluation_writes_for_labels_and_regions():
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunet_ext.benchmarking.evaluation import label_names

    regions = {"labels": {"background": 0, "organ": [1, 2], "tumour": [2]}, "regions_class_order": [1, 2]}
    labels = {"labels": {"background": 0, "organ": 1, "tumour": 2, "ignore": 3}}
    for dataset_json in (regions, labels):
        manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
        keys = [label_or_region_to_key(r) for r in (manager.foreground_regions if manager.has_regions
                                                     else manager.foreground_labels)]
        assert sorted(label_names(dataset_json)) == sorted(keys)
    assert label_names(regions) == {"(1, 2)": "organ", "(2,)": "tumour"}


def _check(monkeypatch, capsys, env: dict, *arguments: str) -> tuple[int, str, str]:
    """``nnunet-ext check`` in this process, with the nnU-Net folders of ``env``."""
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, env[variable])
    status = cli.main(["check", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_check_input_flags_misnamed_partial_4d_and_vector_files(nnunet_env, planned_dataset, tmp_path, monkeypatch,
                                                                capsys):
    import SimpleITK as sitk

    check = ["-d", planned_dataset.name[7:10], "-c", "3d_fullres", "-tr", "nnUNetTrainer"]
    image = next((planned_dataset / "imagesTs").glob("*_0000.nii.gz"))
    inputs = {name: tmp_path / name for name in ("partial", "hidden", "four_d", "vector")}
    for folder in inputs.values():
        folder.mkdir()
        shutil.copy(image, folder / image.name)
    # what an interrupted write of another tool leaves: it ends in .nii.gz, so nnUNetv2_predict would read it
    shutil.copy(image, inputs["partial"] / f".{image.name}.partial.nii.gz")
    shutil.copy(image, inputs["hidden"] / f"._{image.name}")  # macOS' resource-fork twin
    sitk.WriteImage(sitk.Image([16, 16, 8, 2], sitk.sitkInt16), str(inputs["four_d"] / "four_0000.nii.gz"))
    sitk.WriteImage(sitk.Image([16, 16, 8], sitk.sitkVectorInt16, 3), str(inputs["vector"] / "rgb_0000.nii.gz"))

    expected = {"partial": f".{image.name}.partial.nii.gz. nnUNetv2_predict would read them and fail",
                "hidden": f"do not follow nnU-Net's naming CASE_XXXX.nii.gz: ._{image.name}",
                "four_d": "four_0000.nii.gz is a 4D image (size (16, 16, 8, 2))",
                "vector": "rgb_0000.nii.gz has 3 components per voxel"}
    for name, message in expected.items():
        status, _, error = _check(monkeypatch, capsys, nnunet_env, *check, "-i", str(inputs[name]))
        assert status == 2 and message in error, error
    (inputs["vector"] / "rgb_0000.nii.gz").unlink()
    status, out, _ = _check(monkeypatch, capsys, nnunet_env, *check, "-i", str(inputs["vector"]))
    assert status == 0 and "ok  1 case(s)" in out


def test_nnunet_folders_pointing_at_a_file_are_refused(nnunet_env, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("")
    env = {**nnunet_env, "nnUNet_results": str(a_file)}
    status, out, error = _check(monkeypatch, capsys, env, "-d", "991", "-c", "3d_fullres", "-tr", "nnUNetTrainer")
    assert status == 2 and f"pointing at a file, not a folder: nnUNet_results={a_file}" in error
    assert "ok  nnU-Net folders" not in out
    assert cli.main(["cv", "-d", "991", "-c", "3d_fullres", "-tr", "nnUNetTrainer", "--dry-run"]) == 2
    assert f"nnUNet_results={a_file}" in capsys.readouterr().err
    monkeypatch.setenv("nnUNet_raw", str(a_file))
    assert cli.main(["synth", "7", "--cases", "1"]) == 2
    error = capsys.readouterr().err
    assert f"nnUNet_raw ({a_file}) is a file, not a folder" in error and "File exists" not in error
    assert a_file.read_text() == ""


def test_every_subcommand_help_says_what_it_does_writes_and_returns():
    import importlib

    from nnunet_ext.cli import SUBCOMMANDS, build_parser, help_text

    top = run_command(["nnunet-ext", "--help"], scrubbed_environment()).stdout
    assert "``" not in top and all(name in top for name in SUBCOMMANDS)
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(subparsers) == sorted(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"nnunet_ext.commands.{name}")  # each subcommand its module, same name
        text = subparsers[name].format_help()
        description = text.split("\n\n", 1)[1]  # after the usage lines
        summary = help_text(module)[0]  # the docstring's first line
        assert summary in " ".join(top.split()) and description.startswith(summary + ".\n\n")
        assert "exit status:" in description
        assert "  2  usage or input error" in description
    cv_help = subparsers["cv"].format_help()
    assert "-f FOLDS" in cv_help and "(default: 0 1 2 3 4)" in cv_help and "(default: nnUNetPlans)" in cv_help
    assert " 75  stopped" in cv_help and "--folds" not in cv_help
    detect_help = subparsers["detect"].format_help()
    assert "-device" in detect_help and "--disable_tta" in detect_help and "--device" not in detect_help
    assert "242 s" in subparsers["demo"].format_help()  # the duration the README measures


def test_list_json_is_machine_readable():
    listing = json.loads(run_command(["nnunet-ext", "list", "--json"], scrubbed_environment()).stdout)
    names = {trainer["name"]: trainer for trainer in listing["trainers"]}
    assert names["nnUNetTrainerSegFormer3DVariant"]["parameters"] > 0
    assert names["nnUNetTrainerRECUNet"]["configurations"] == "2d" and listing["discovery"]["active"] is True
