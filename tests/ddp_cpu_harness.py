"""Run nnU-Net's DDP training path on CPU with the gloo backend (the stock CLI supports DDP only with NCCL).

Usage: python ddp_cpu_harness.py DATASET CONFIGURATION FOLD TRAINER WORLD_SIZE

It reproduces ``nnunetv2.run.run_training.run_ddp`` and patches exactly what ties it to CUDA: the gloo process
group, DDP without ``device_ids``, no SyncBatchNorm conversion (GPU-only) and the trainer's device. Everything
else (batch split, loss gathering, rank-0 checkpointing, DDP's unused-parameter check) is nnU-Net's own.
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world_size: int, dataset: str, configuration: str, fold: int, trainer_name: str) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer_module.DDP = lambda module, device_ids=None, **kwargs: torch.nn.parallel.DistributedDataParallel(
        module, **kwargs)
    torch.nn.SyncBatchNorm.convert_sync_batchnorm = staticmethod(lambda module, process_group=None: module)

    trainer = get_trainer_from_args(dataset, configuration, fold, trainer_name, "nnUNetPlans", False,
                                    device=torch.device("cpu"))
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None  # __init__ chose cuda:<rank> under DDP
    trainer.run_training()
    dist.destroy_process_group()


if __name__ == "__main__":
    dataset, configuration, fold, trainer_name, world_size = sys.argv[1:6]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    mp.spawn(_worker, args=(int(world_size), dataset, configuration, int(fold), trainer_name),
             nprocs=int(world_size), join=True)
