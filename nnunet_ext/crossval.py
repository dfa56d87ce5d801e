"""The cross-validation folds of several trainers, run through nnU-Net's own ``nnUNetv2_train`` (``nnunet-ext cv``).

Every (configuration, trainer, fold) is one job. Its state is read from the fold folder that nnU-Net writes, and
a file counts only if it loads (a checkpoint is checked as ``--c`` checks it, tensors memory-mapped; a summary must
parse):

* ``finished``: ``checkpoint_final.pth`` and ``validation/summary.json`` with the ``.npz`` probabilities that
  ``nnUNetv2_find_best_configuration`` ensembles: skipped;
* ``validate``: trained, but the validation (or its ``.npz`` files) is missing or damaged:
  ``nnUNetv2_train ... --val --npz``;
* ``interrupted``: a loadable checkpoint but no loadable final one (a crash, a time limit, our trainers' clean stop
  on SIGTERM / SIGUSR1 with exit status 75, or a damaged final checkpoint): resumed with nnU-Net's ``--c``, which
  in our trainers falls back to the latest loadable checkpoint;
* ``damaged``: checkpoints, none of them loadable: refused, naming the files (move them away to start again);
* ``new``: trained from scratch with ``--npz``.

Jobs run one after the other, or with ``--gpus 0,1`` one job per GPU at a time (``CUDA_VISIBLE_DEVICES``).
SIGTERM, SIGUSR1 and SIGINT are forwarded to the running trainings and no further job starts, so a preempted run
exits 75 and the next ``nnunet-ext cv`` resumes it. ``--emit-slurm FILE`` writes the same jobs as a SLURM array.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nnunet_ext import checks, datasets

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
# nnU-Net console lines worth showing while several folds run at once
PROGRESS_LINE = re.compile(r"Epoch \d+|Epoch time|Pseudo dice|Validation complete|Mean Validation Dice|Error|error|"
                           r"Traceback|interrupt", re.IGNORECASE)
SLURM_SIGNAL_LEAD_SECONDS = 300


class CrossValidationError(ValueError):
    """A request ``nnunet-ext cv`` cannot run; the message says how to fix it."""


def console_script(name: str) -> str:
    """A console script of this environment (next to the running Python), else the one on PATH."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"'{name}' is neither next to {sys.executable} nor on PATH; install nnunetv2 "
                                f"(and nnunet-ext) into this environment.")
    return found


def results_folder(results_root: Path, dataset_name: str, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's output folder of one trainer x plans x configuration (holds fold_0 ... fold_4, fold_all)."""
    return results_root / dataset_name / f"{trainer}__{plans}__{configuration}"


def fold_state(fold_folder: Path) -> str:
    """One of ``finished``, ``validate``, ``interrupted``, ``damaged`` and ``new`` (see the module docstring)."""
    return inspect_fold(fold_folder)[0]


def inspect_fold(fold_folder: Path) -> tuple[str, str]:
    """The fold's state and a note naming the files that could not be loaded ("" when none)."""
    from nnunet_ext.trainers.preemption import CHECKPOINT_ORDER, load_checked_checkpoint

    damaged = {}
    loadable = []
    for name in CHECKPOINT_ORDER:
        if not (fold_folder / name).is_file():
            continue
        try:
            load_checked_checkpoint(fold_folder / name)
            loadable.append(name)
        except Exception as error:  # truncated, corrupt or not a checkpoint: whatever torch.load raises
            damaged[name] = f"{type(error).__name__}: {error}"
    note = "; ".join(f"{name} cannot be loaded ({problem})" for name, problem in damaged.items())
    if "checkpoint_final.pth" in loadable:
        validation = fold_folder / "validation"
        summary_problem = _summary_problem(validation / "summary.json")
        if summary_problem is None and any(validation.glob("*.npz")):
            return "finished", note
        if summary_problem is not None and (validation / "summary.json").exists():
            note = "; ".join(filter(None, [note, f"validation/summary.json {summary_problem}"]))
        return "validate", note
    if loadable:
        return "interrupted", note
    return ("damaged", note) if damaged else ("new", note)


def _summary_problem(summary: Path) -> str | None:
    try:
        content = json.loads(summary.read_text())
    except FileNotFoundError:
        return "is missing"
    except (OSError, ValueError) as error:
        return f"cannot be read ({type(error).__name__}: {error})"
    if not isinstance(content, dict) or "metric_per_case" not in content:
        return "is not nnU-Net's evaluation summary (no metric_per_case)"
    return None


ACTIONS = {"finished": "skip (finished)", "validate": "validate (--val --npz)",
           "interrupted": "resume (--c)", "new": "train"}


@dataclass(frozen=True)
class FoldJob:
    """One fold of one trainer and configuration, with the state its folder was in when the plan was made."""

    configuration: str
    trainer: str
    fold: str
    folder: Path
    state: str
    note: str = ""  # files of the fold that could not be loaded

    @property
    def tag(self) -> str:
        return f"{self.trainer} {self.configuration} fold {self.fold}"

    def arguments(self, dataset: str, plans: str, device: str) -> list[str]:
        """nnUNetv2_train's arguments (without the command name) for this job's state."""
        extra = {"validate": ["--val"], "interrupted": ["--c"]}.get(self.state, [])
        return [dataset, self.configuration, self.fold, "-tr", self.trainer, "-p", plans, "--npz", "-device", device,
                *extra]


def parse_folds(folds: list[str]) -> list[str]:
    """Fold names as nnUNetv2_train takes them: integers >= 0 or ``all``."""
    for fold in folds:
        if fold != "all" and not (fold.isdigit()):
            raise CrossValidationError(f"Invalid fold '{fold}': give integers 0..4 (nnU-Net's 5-fold split) or 'all'.")
    return list(dict.fromkeys(str(int(f)) if f.isdigit() else f for f in folds))


def check_folds_exist(folds: list[str], preprocessed_dataset: Path) -> None:
    """Every numbered fold is one of the dataset's splits: nnU-Net trains a fold beyond them on a random 80:20
    split instead of failing. The splits are those of splits_final.json, else nnU-Net's 5 folds."""
    splits_file = preprocessed_dataset / "splits_final.json"
    try:
        count = len(json.loads(splits_file.read_text())) if splits_file.is_file() else 5
    except (OSError, ValueError) as error:
        raise CrossValidationError(f"{splits_file} cannot be read ({error}); fix or delete it (nnU-Net then makes "
                                   "its 5-fold split again).") from error
    beyond = [f for f in folds if f != "all" and int(f) >= count]
    if beyond:
        source = f"{splits_file}" if splits_file.is_file() else "nnU-Net's 5-fold split"
        raise CrossValidationError(f"Invalid fold(s) {', '.join(beyond)}: the dataset has {count} folds "
                                   f"({source}), so give integers 0..{count - 1} or 'all'.")


def parse_gpus(gpus: str | None) -> list[int]:
    """GPU indices from ``0,1``; each must be a CUDA device this process can see (``torch.cuda.device_count``)."""
    if gpus is None:
        return []
    try:
        indices = [int(g) for g in gpus.split(",") if g.strip() != ""]
    except ValueError:
        raise CrossValidationError(f"--gpus {gpus}: give comma-separated GPU indices, e.g. --gpus 0,1.") from None
    if not indices or len(set(indices)) != len(indices) or min(indices) < 0:
        raise CrossValidationError(f"--gpus {gpus}: give distinct GPU indices >= 0, e.g. --gpus 0,1.")
    import torch

    count = torch.cuda.device_count()
    missing = [i for i in indices if i >= count]
    if missing:
        visible = f"{count} CUDA device(s): {', '.join(map(str, range(count)))}" if count else "no CUDA device"
        raise CrossValidationError(
            f"--gpus {gpus}: GPU {', '.join(map(str, missing))} does not exist; this process sees {visible} "
            f"(torch.cuda.device_count(), after CUDA_VISIBLE_DEVICES). Name existing GPUs, or leave --gpus out to "
            f"run the folds one after the other.")
    return indices


def plan_jobs(dataset: str, configurations: list[str], trainers: list[str], folds: list[str],
              plans: str = "nnUNetPlans") -> tuple[str, list[FoldJob]]:
    """Check the request and return (dataset folder name, jobs in run order: configuration, trainer, fold)."""
    from nnunet_ext.catalog import resolve_trainer

    paths = checks.require_nnunet_paths()
    dataset_name = datasets.dataset_name(dataset)
    folds = parse_folds(folds)
    check_folds_exist(folds, paths["nnUNet_preprocessed"] / dataset_name)
    jobs = []
    for configuration in dict.fromkeys(configurations):
        plans_dict = checks.load_plans(dataset_name, plans, configuration, paths)
        for trainer_name in dict.fromkeys(trainers):
            trainer = resolve_trainer(trainer_name)
            checks.check_trainer_configuration(trainer, plans_dict, configuration)
            output = results_folder(paths["nnUNet_results"], dataset_name, trainer_name, plans, configuration)
            for fold in folds:
                folder = output / f"fold_{fold}"
                jobs.append(FoldJob(configuration, trainer_name, fold, folder, *inspect_fold(folder)))
    damaged = [job for job in jobs if job.state == "damaged"]
    if damaged:
        raise CrossValidationError(
            "No checkpoint of these folds can be loaded, so they can neither be skipped nor resumed: "
            + "; ".join(f"{job.folder}: {job.note}" for job in damaged)
            + ". Move the damaged files out of the fold folder to train the fold from scratch.")
    return dataset_name, jobs


def describe_plan(jobs: list[FoldJob], dataset: str, plans: str, device: str) -> str:
    lines = []
    for index, job in enumerate(jobs, 1):
        command = ("" if job.state == "finished" else
                   "  $ nnUNetv2_train " + shlex.join(job.arguments(dataset, plans, device)))
        note = f" ({job.note})" if job.note else ""
        lines.append(f"[{index}/{len(jobs)}] {job.tag}: {ACTIONS[job.state]}{note}{command}")
    pending = sum(job.state != "finished" for job in jobs)
    lines.append(f"{pending} of {len(jobs)} fold(s) to run, {len(jobs) - pending} finished.")
    return "\n".join(lines)


class _Runner:
    """Runs jobs on worker slots (one per GPU, or one CPU/default-device slot), forwarding stop signals."""

    def __init__(self, dataset: str, plans: str, device: str, gpus: list[int], verbose: bool):
        self.dataset, self.plans, self.device = dataset, plans, device
        self.slots: list[int | None] = list(gpus) or [None]
        self.verbose = verbose
        self.stop_signal: int | None = None
        self.processes: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[FoldJob, int, float]] = []

    def say(self, message: str) -> None:
        with self.lock:
            print(message, flush=True)

    def _forward(self, signum: int, _frame) -> None:
        self.stop_signal = signum
        with self.lock:
            running = list(self.processes)
        for process in running:
            if process.poll() is None:
                process.send_signal(signum)
        self.say(f"nnunet-ext cv: received {signal.Signals(signum).name}, forwarded it to {len(running)} "
                 f"training(s); no further fold starts. Run the same command again to resume.")

    def _environment(self, slot: int | None) -> dict[str, str]:
        env = dict(os.environ)
        if slot is not None:
            visible = env.get("CUDA_VISIBLE_DEVICES")
            # --gpus counts the devices this process sees; map back to the names the parent was given
            names = [v.strip() for v in visible.split(",")] if visible else None
            env["CUDA_VISIBLE_DEVICES"] = names[slot] if names else str(slot)
        return env

    def _run_one(self, job: FoldJob, slot: int | None, position: str) -> int:
        from nnunet_ext.trainers.preemption import EXIT_PREEMPTED  # imports torch: not at import of the CLI
        command = [console_script("nnUNetv2_train"), *job.arguments(self.dataset, self.plans, self.device)]
        where = f" on GPU {slot}" if slot is not None else ""
        self.say(f"{position} {job.tag}: {ACTIONS[job.state]}{where}\n  $ {shlex.join(command)}")
        job.folder.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        # own session: only our forwarded signal reaches the training, exactly once
        with open(job.folder / "nnunet_ext_cv_console.txt", "a") as console, subprocess.Popen(
                command, env=self._environment(slot), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                bufsize=1, start_new_session=True) as process:
            with self.lock:
                self.processes.add(process)
            for line in process.stdout:
                console.write(line)
                if self.verbose or PROGRESS_LINE.search(line):
                    self.say(f"  [{job.tag}] {line.rstrip()}")
            returncode = process.wait()
            with self.lock:
                self.processes.discard(process)
        seconds = time.monotonic() - start
        status = {0: "", EXIT_PREEMPTED: f" (exit {EXIT_PREEMPTED}): run the same command again to resume"}.get(
            returncode, f"; full output in {job.folder / 'nnunet_ext_cv_console.txt'}")
        outcome = {0: "done", EXIT_PREEMPTED: "interrupted"}.get(returncode, f"FAILED (exit {returncode})")
        self.say(f"{position} {job.tag}: {outcome} after {seconds:.0f} s{status}")
        with self.lock:
            self.outcomes.append((job, returncode, seconds))
        return returncode

    def run(self, jobs: list[FoldJob]) -> int:
        from nnunet_ext.trainers.preemption import EXIT_PREEMPTED  # imports torch: not at import of the CLI
        todo: queue.Queue = queue.Queue()
        for index, job in enumerate(jobs, 1):
            todo.put((f"[{index}/{len(jobs)}]", job))

        def worker(slot: int | None) -> None:
            while self.stop_signal is None:
                try:
                    position, job = todo.get_nowait()
                except queue.Empty:
                    return
                self._run_one(job, slot, position)

        previous = {s: signal.signal(s, self._forward) for s in FORWARDED_SIGNALS}
        try:
            threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in self.slots]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():  # join with a timeout keeps the main thread able to run signal handlers
                    thread.join(0.2)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        codes = [code for _, code, _ in self.outcomes]
        if any(code not in (0, EXIT_PREEMPTED) for code in codes):
            return 1
        if self.stop_signal is not None or EXIT_PREEMPTED in codes:
            return EXIT_PREEMPTED
        return 0


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_cross_validation(dataset: str, configurations: list[str], trainers: list[str], folds: list[str],
                         plans: str = "nnUNetPlans", device: str | None = None, gpus: str | None = None,
                         dry_run: bool = False, emit_slurm: str | os.PathLike | None = None,
                         slurm_options: dict | None = None, verbose: bool | None = None,
                         overwrite: bool = False) -> int:
    """The ``nnunet-ext cv`` command; returns its exit status (0, 1 if a fold failed, 75 if interrupted).
    ``overwrite`` allows ``emit_slurm`` to replace an existing file."""
    from nnunet_ext.trainers.preemption import EXIT_PREEMPTED  # imports torch: not at import of the CLI
    if emit_slurm is not None:
        check_script_target(Path(emit_slurm), overwrite)
    gpu_indices = parse_gpus(gpus) if emit_slurm is None else []
    if device is None:
        device = "cuda" if gpu_indices or emit_slurm is not None else default_device()
    if gpu_indices and device != "cuda":
        raise CrossValidationError(f"--gpus needs -device cuda (got -device {device}).")
    dataset_name, jobs = plan_jobs(dataset, configurations, trainers, folds, plans)
    dataset_id = dataset_name[7:10]
    print(describe_plan(jobs, dataset_id, plans, device))
    if emit_slurm is not None:
        pending = [job for job in jobs if job.state != "finished"]
        if not pending:
            print("Every fold is finished: no SLURM script written.")
            return 0
        path = write_slurm_script(Path(emit_slurm), dataset_id, plans, pending, **(slurm_options or {}))
        print(f"Wrote {path}: a SLURM array of {len(pending)} task(s), one fold each. Submit with: sbatch {path}")
        return 0
    if dry_run:
        return 0
    pending = [job for job in jobs if job.state != "finished"]
    if not pending:
        print("Every fold is finished; nothing to do.")
        return 0
    runner = _Runner(dataset_id, plans, device, gpu_indices, verbose=len(gpu_indices) <= 1 if verbose is None
                     else verbose)
    status = runner.run(pending)
    print("Summary:")
    for job, code, seconds in runner.outcomes:
        outcome = {0: "ok", EXIT_PREEMPTED: "interrupted"}.get(code, f"failed (exit {code})")
        print(f"  {job.tag}: {outcome}, {seconds:.0f} s")
    not_started = len(pending) - len(runner.outcomes)
    if not_started:
        print(f"  {not_started} fold(s) not started (stopped by a signal)")
    return status


def check_script_target(path: Path, overwrite: bool) -> None:
    """``--emit-slurm FILE`` names a file to write: not a folder, and not an existing file unless ``overwrite``."""
    if path.is_dir():
        raise CrossValidationError(f"--emit-slurm {path} is a folder; give a file name, e.g. {path / 'cv.sbatch'}.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"--emit-slurm {path} exists already. Pass --overwrite to replace it, or give another "
                              "file name.")


def write_slurm_script(path: Path, dataset_id: str, plans: str, jobs: list[FoldJob], time_limit: str = "24:00:00",
                       partition: str | None = None, cpus: int = 8, gpus_per_task: int = 1) -> Path:
    """A SLURM array script, one task per job, each running ``nnunet-ext cv`` for its single fold.

    Preemption and time limits: ``--signal=B:USR1@300`` has SLURM send SIGUSR1 to the batch shell 300 s before
    the limit; the shell forwards it to ``nnunet-ext cv``, which forwards it to the training. Our trainers then
    write ``checkpoint_latest.pth`` and exit 75, and the script requeues its task (``--requeue`` allows that; a
    preemption with PreemptMode=REQUEUE requeues it too). The requeued task runs the same command, which sees
    the checkpoint and resumes with ``--c``; a finished fold is skipped.
    """
    from nnunet_ext.trainers.preemption import EXIT_PREEMPTED  # imports torch: not at import of the CLI
    try:
        command = console_script("nnunet-ext")
    except FileNotFoundError:  # the cluster's environment may still have it
        command = "nnunet-ext"
    tasks = "\n".join(f"  {shlex.quote(f'{j.configuration} {j.trainer} {j.fold}')}" for j in jobs)
    exports = "\n".join(f"export {v}={shlex.quote(os.environ[v])}" for v in checks.NNUNET_PATH_VARIABLES
                        if os.environ.get(v))
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=nnunet-ext-cv-{dataset_id}",
        f"#SBATCH --array=0-{len(jobs) - 1}",
        f"#SBATCH --gres=gpu:{gpus_per_task}",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --time={time_limit}",
        *([f"#SBATCH --partition={partition}"] if partition else []),
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR1@{SLURM_SIGNAL_LEAD_SECONDS}",
        "#SBATCH --output=nnunet-ext-cv-%A_%a.log",
        "# Written by `nnunet-ext cv --emit-slurm`: one fold per array task. On SIGUSR1 (300 s before the time",
        "# limit) or SIGTERM the training stops cleanly with checkpoint_latest.pth and exit status 75; the task",
        "# then requeues itself, and the requeued run resumes with nnUNetv2_train --c (finished folds are skipped).",
        exports,
        "TASKS=(",
        tasks,
        ")",
        "read -r CONFIGURATION TRAINER FOLD <<< \"${TASKS[$SLURM_ARRAY_TASK_ID]}\"",
        f"{shlex.quote(command)} cv -d {dataset_id} -c \"$CONFIGURATION\" -tr \"$TRAINER\" -f \"$FOLD\" "
        f"-p {shlex.quote(plans)} -device cuda &",
        "CHILD=$!",
        "trap 'kill -USR1 $CHILD' USR1",
        "trap 'kill -TERM $CHILD' TERM",
        "# wait returns early when a trapped signal arrives; keep waiting until the training has exited",
        "while true; do",
        "  wait $CHILD",
        "  STATUS=$?",
        "  kill -0 $CHILD 2>/dev/null || break",
        "done",
        f"if [ $STATUS -eq {EXIT_PREEMPTED} ]; then",
        "  echo \"fold interrupted: requeueing ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} to resume it\"",
        "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"",
        "fi",
        "exit $STATUS",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(line for line in lines if line != "") + "\n")
    path.chmod(0o755)
    return path
