"""``nnunet-ext cv`` through the stock nnUNetv2_train: trains every fold with --npz, skips finished folds on a
re-run, resumes an interrupted fold with --c, plans without running (--dry-run, --emit-slurm), and refuses GPUs that
do not exist. The trained results folder is the session's (``cv_training``), shared with test_benchmarking."""
import shutil
import subprocess

import pytest
import torch

from helpers import run_command

from nnunet_ext import cli, crossval

pytest_plugins = ("cv_training",)  # the session's trained folds (not imported here: the plug-in gets assert rewriting)

CV_DATASET_ID = 980
CV_TRAINERS = ("nnUNetTrainer_Smoke", "nnUNetTrainerSegFormer3DVariant_Smoke")
CV_FOLDS = ("0", "1")
CV = ["nnunet-ext", "cv", "-d", str(CV_DATASET_ID), "-c", "3d_fullres"]


@pytest.fixture(scope="module", autouse=True)
def same_set_up(cv_trained):
    assert (cv_trained.dataset_id, cv_trained.trainers, cv_trained.folds) == (CV_DATASET_ID, CV_TRAINERS, CV_FOLDS)


def _fold(cv_trained, trainer: str, fold: str):
    return cv_trained.model_folder(trainer) / f"fold_{fold}"


def test_cv_trains_every_fold_for_ensembling_and_shows_progress(cv_trained):
    output = cv_trained.first_run_output
    for trainer in CV_TRAINERS:
        for fold in CV_FOLDS:
            folder = _fold(cv_trained, trainer, fold)
            assert crossval.fold_state(folder) == "finished"
            assert len(list((folder / "validation").glob("*.npz"))) == 2  # 8 cases: 2 per fold for folds 0, 1
            assert f"{trainer} 3d_fullres fold {fold}: done after" in output
            assert f"nnUNetv2_train {CV_DATASET_ID} 3d_fullres {fold} -tr {trainer} -p nnUNetPlans --npz" in output
    assert "[4/4]" in output and "Epoch time" in output  # per-fold position and nnU-Net's own progress


def _cv_in_process(capsys, monkeypatch, env, *arguments: str) -> tuple[int, str, str]:
    """``nnunet-ext cv`` through its main() (no new interpreter: for runs that start no training)."""
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, env[variable])
    status = cli.main(["cv", "-d", str(CV_DATASET_ID), "-c", "3d_fullres", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_rerun_skips_finished_folds(cv_trained, capsys, monkeypatch):
    checkpoints = {p: p.stat().st_mtime_ns for p in cv_trained.results.glob("*/fold_*/checkpoint_final.pth")}
    status, out, _ = _cv_in_process(capsys, monkeypatch, cv_trained.env, "-tr", *CV_TRAINERS, "-f", *CV_FOLDS,
                                    "-device", "cpu")
    assert status == 0 and out.count("skip (finished)") == 4
    assert "nothing to do" in out and "nnUNetv2_train" not in out
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints


def test_interrupted_fold_is_resumed_with_c(cv_trained):
    """A fold stopped mid-training has a checkpoint but no final one: cv resumes it, and leaves the others."""
    folder = _fold(cv_trained, CV_TRAINERS[1], "1")
    (folder / "checkpoint_final.pth").rename(folder / "checkpoint_latest.pth")
    shutil.rmtree(folder / "validation")
    assert crossval.fold_state(folder) == "interrupted"

    result = run_command([*CV, "-tr", *CV_TRAINERS, "-f", *CV_FOLDS, "-device", "cpu"], cv_trained.env)
    assert result.stdout.count("skip (finished)") == 3
    assert (f"{CV_TRAINERS[1]} 3d_fullres fold 1: resume (--c)" in result.stdout
            and "-device cpu --c" in result.stdout)
    assert crossval.fold_state(folder) == "finished"
    assert "ok" in result.stdout.split("Summary:")[1]


def _checkpoint(path, **content):
    """A file as nnU-Net's save_checkpoint writes it: a torch.save zip archive holding its entries."""
    entries = {"network_weights": {"w": torch.zeros(4)}, "optimizer_state": {}, "logging": {}, "current_epoch": 1,
               "init_args": {}, "trainer_name": "T", **content}
    torch.save(entries, path)


def test_fold_states_follow_nnunets_files_that_load(tmp_path):
    fold = tmp_path / "fold_0"
    assert crossval.fold_state(fold) == "new"
    fold.mkdir()
    _checkpoint(fold / "checkpoint_best.pth")
    assert crossval.fold_state(fold) == "interrupted"
    _checkpoint(fold / "checkpoint_final.pth")
    assert crossval.fold_state(fold) == "validate"  # trained, never validated
    (fold / "validation").mkdir()
    (fold / "validation" / "summary.json").write_text('{"metric_per_case": []}')
    assert crossval.fold_state(fold) == "validate"  # validated without --npz: ensembling needs the probabilities
    (fold / "validation" / "case_000.npz").touch()
    assert crossval.fold_state(fold) == "finished"
    job = crossval.FoldJob("3d_fullres", "T", "0", fold, "validate")
    assert job.arguments("980", "nnUNetPlans", "cpu")[-4:] == ["--npz", "-device", "cpu", "--val"]

    (fold / "validation" / "summary.json").write_text('{"metric_per_case": [')  # cut off while written
    assert crossval.inspect_fold(fold) == ("validate", "validation/summary.json cannot be read (JSONDecodeError: "
                                                       "Expecting value: line 1 column 22 (char 21))")
    (fold / "validation" / "summary.json").write_text('{"metric_per_case": []}')
    final = fold / "checkpoint_final.pth"
    final.write_bytes(final.read_bytes()[:-100])  # truncated: the damaged final checkpoint is resumed from best
    assert crossval.inspect_fold(fold) == ("interrupted", "checkpoint_final.pth cannot be loaded (ValueError: not a "
                                                          "complete checkpoint (truncated or corrupt: no zip "
                                                          "directory at its end))")
    (fold / "checkpoint_best.pth").write_bytes(b"")
    assert crossval.inspect_fold(fold)[0] == "damaged"  # checkpoints, none of them loadable
    _checkpoint(fold / "checkpoint_best.pth")
    torch.save({"weights": 1}, final)  # loads, but is no nnU-Net checkpoint
    assert "checkpoint_final.pth cannot be loaded (KeyError" in crossval.inspect_fold(fold)[1]


def test_damaged_files_are_planned_by_what_loads_and_unloadable_folds_are_refused(cv_trained, tmp_path, capsys,
                                                                                  monkeypatch):
    trained = _fold(cv_trained, CV_TRAINERS[0], "0")
    results = tmp_path / "results"
    model = results / cv_trained.dataset_name / f"{CV_TRAINERS[0]}__nnUNetPlans__3d_fullres"
    shutil.copytree(trained, model / "fold_0")
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"")  # zero bytes, its .npz and summary still there
    shutil.copy(trained / "checkpoint_final.pth", model / "fold_0" / "checkpoint_latest.pth")
    shutil.copytree(trained, model / "fold_1")
    (model / "fold_1" / "validation" / "summary.json").write_text("{")
    env = {**cv_trained.env, "nnUNet_results": str(results)}

    status, out, err = _cv_in_process(capsys, monkeypatch, env, "-tr", CV_TRAINERS[0], "-f", "0", "1",
                                      "-device", "cpu", "--dry-run")
    assert status == 0, err
    assert (f"fold 0: resume (--c) (checkpoint_final.pth cannot be loaded (ValueError: the file is empty))  $ "
            f"nnUNetv2_train {CV_DATASET_ID} 3d_fullres 0") in out
    assert "fold 1: validate (--val --npz) (validation/summary.json cannot be read (JSONDecodeError" in out

    for checkpoint in (model / "fold_0").glob("checkpoint_*.pth"):  # final, latest and best
        checkpoint.write_bytes(b"PK")
    error = _cv_error(capsys, monkeypatch, env, "-tr", CV_TRAINERS[0], "-f", "0", "--dry-run")
    assert "No checkpoint of these folds can be loaded" in error and str(model / "fold_0") in error
    assert "checkpoint_latest.pth cannot be loaded" in error and "Move the damaged files out" in error


def test_dry_run_prints_the_plan_and_runs_nothing(cv_trained, capsys, monkeypatch):
    status, out, _ = _cv_in_process(capsys, monkeypatch, cv_trained.env, "-tr", CV_TRAINERS[0], "-f", "0", "2",
                                    "-device", "cpu", "--dry-run")
    assert status == 0 and f"[1/2] {CV_TRAINERS[0]} 3d_fullres fold 0: skip (finished)" in out
    assert (f"[2/2] {CV_TRAINERS[0]} 3d_fullres fold 2: train  $ nnUNetv2_train {CV_DATASET_ID} 3d_fullres 2 "
            f"-tr {CV_TRAINERS[0]} -p nnUNetPlans --npz -device cpu") in out
    assert "1 of 2 fold(s) to run" in out
    assert not _fold(cv_trained, CV_TRAINERS[0], "2").exists()


def test_emit_slurm_writes_a_requeueing_array_of_unfinished_folds(cv_trained, tmp_path, capsys, monkeypatch):
    script = tmp_path / "cv.sbatch"
    status, out, _ = _cv_in_process(capsys, monkeypatch, cv_trained.env, "-tr", *CV_TRAINERS, "-f", "0", "2",
                                    "3", "--emit-slurm", str(script), "--slurm-time", "02:00:00")
    assert status == 0 and "a SLURM array of 4 task(s)" in out
    text = script.read_text()
    for line in ("#SBATCH --array=0-3", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300", "#SBATCH --time=02:00:00",
                 "trap 'kill -USR1 $CHILD' USR1", "scontrol requeue", "if [ $STATUS -eq 75 ]",
                 f"export nnUNet_results={cv_trained.env['nnUNet_results']}"):
        assert line in text
    tasks = text.split("TASKS=(")[1].split(")")[0].split()
    assert " ".join(tasks) == (f"'3d_fullres {CV_TRAINERS[0]} 2' '3d_fullres {CV_TRAINERS[0]} 3' "
                               f"'3d_fullres {CV_TRAINERS[1]} 2' '3d_fullres {CV_TRAINERS[1]} 3'")  # fold 0 is done
    assert '-tr "$TRAINER" -f "$FOLD" -p nnUNetPlans -device cuda &' in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

    arguments = ["-tr", CV_TRAINERS[0], "-f", "2", "--emit-slurm", str(script)]
    error = _cv_error(capsys, monkeypatch, cv_trained.env, *arguments)
    assert f"--emit-slurm {script} exists already. Pass --overwrite" in error and script.read_text() == text
    error = _cv_error(capsys, monkeypatch, cv_trained.env, "-tr", CV_TRAINERS[0], "--emit-slurm", str(tmp_path))
    assert f"--emit-slurm {tmp_path} is a folder; give a file name" in error
    status, _, _ = _cv_in_process(capsys, monkeypatch, cv_trained.env, *arguments, "--overwrite")
    assert status == 0 and "#SBATCH --array=0-0" in script.read_text()


def _cv_error(capsys, monkeypatch, env, *arguments: str) -> str:
    status, _, err = _cv_in_process(capsys, monkeypatch, env, *arguments)
    assert status == 2
    return err


def test_gpus_naming_a_missing_device_is_refused(cv_trained, capsys, monkeypatch):
    import torch

    count = torch.cuda.device_count()
    error = _cv_error(capsys, monkeypatch, cv_trained.env, "-tr", CV_TRAINERS[0], "--gpus", str(count + 7))
    assert f"GPU {count + 7} does not exist" in error
    assert (f"{count} CUDA device(s)" if count else "no CUDA device") in error
    assert "--gpus" in _cv_error(capsys, monkeypatch, cv_trained.env, "-tr", CV_TRAINERS[0], "--gpus", "a")


def test_unknown_trainer_and_fold_are_refused_before_training(cv_trained, capsys, monkeypatch):
    error = _cv_error(capsys, monkeypatch, cv_trained.env, "-tr", "nnUNetTrainerNoSuchNet")
    assert "Unknown trainer 'nnUNetTrainerNoSuchNet'" in error and "nnUNetTrainerSegFormer3DVariant" in error
    error = _cv_error(capsys, monkeypatch, cv_trained.env, "-tr", CV_TRAINERS[0], "-f", "first")
    assert "Invalid fold 'first'" in error
    error = _cv_error(capsys, monkeypatch, cv_trained.env, "-tr", CV_TRAINERS[0], "-f", "0", "5")
    assert "Invalid fold(s) 5: the dataset has 5 folds" in error and "0..4" in error
    assert not _fold(cv_trained, "nnUNetTrainerNoSuchNet", "0").exists()


def test_benchmark_keeps_an_earlier_report_and_names_a_damaged_json_file(cv_trained, tmp_path, capsys, monkeypatch):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, cv_trained.env[variable])
    benchmark = ["benchmark", "-d", str(CV_DATASET_ID), "-c", "3d_fullres", "-tr", CV_TRAINERS[0], "-f", "0"]
    output = tmp_path / "report"
    output.mkdir()
    (output / "benchmark.md").write_text("an earlier benchmark")
    assert cli.main([*benchmark, "-o", str(output)]) == 2
    assert "holds a benchmark already (benchmark.md). Pass --overwrite" in capsys.readouterr().err
    assert (output / "benchmark.md").read_text() == "an earlier benchmark"

    trained = cv_trained.model_folder(CV_TRAINERS[0])
    copy = tmp_path / "results" / cv_trained.dataset_name / trained.name
    (copy / "fold_0" / "validation").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(trained / name, copy / name)
    summary = copy / "fold_0" / "validation" / "summary.json"
    summary.write_text((trained / "fold_0" / "validation" / "summary.json").read_text()[:200])  # cut off
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    assert cli.main([*benchmark, "-o", str(tmp_path / "other")]) == 2
    error = capsys.readouterr().err
    assert f"{summary} is not valid JSON" in error and "Traceback" not in error
