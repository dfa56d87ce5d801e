"""``nnunet-ext benchmark``: compare trainers from their nnU-Net cross-validation results.

Per validation case and label or region: nnU-Net's Dice, HD95 and NSD from the saved predictions; per model:
parameters, FLOPs and the logged times; each trainer against a reference trainer on the per-case Dice (Wilcoxon
with Holm's adjustment, a bootstrap interval); with ``--ensemble``, nnU-Net's find_best_configuration. One module
per job, each importing only modules above it in this list:

- ``results``: the results folders (``Model``, ``find_models``), ``read_json``, ``BenchmarkError``;
- ``evaluation``: the per-case metrics and how they are defined (``CaseMetrics``, ``evaluate_model``,
  ``label_names``);
- ``cost``: parameters, FLOPs and the training logs' times (``Cost``, ``model_cost``);
- ``statistics``: the paired comparison with the reference (``Comparison``, ``compare``, ``holm_adjust``,
  ``bootstrap_interval``);
- ``summary``: ``ModelSummary``, one model's cost, cases and comparison;
- ``tables``: ``benchmark.csv``, ``benchmark_cases.csv`` and ``benchmark.md``;
- ``figure``: ``benchmark.png``;
- ``ensemble``: nnU-Net's ``nnUNetv2_find_best_configuration`` (``--ensemble``);
- ``run``: ``collect`` and ``run_benchmark``, the command (its arguments: ``nnunet_ext.commands.benchmark``).
"""
