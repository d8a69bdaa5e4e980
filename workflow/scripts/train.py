"""LoRA fine-tuning of Qwen2-VL on the training tuples, under DeepSpeed ZeRO-2.

Launched plainly (``python train.py ...``), the script re-executes itself under
``torchrun --standalone`` with one process per GPU (min(--gpus, visible GPUs); one process
on CPU) and exits with its status; under a launcher (RANK/LOCAL_RANK set) it trains.
"""

import json
import logging
import os
import subprocess
import sys

from skinground import cli

log = logging.getLogger("skinground")


def arguments(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--base", required=True, help="base Qwen2-VL model directory")
    p.add_argument("--tuples", required=True, help="training tuples (parquet)")
    p.add_argument("--images", required=True, help="train-image.hdf5 or a folder of JPEGs")
    p.add_argument("--model", type=cli.json_arg, required=True, help="config section model")
    p.add_argument("--train", type=cli.json_arg, required=True, help="config section train")
    p.add_argument("--deepspeed", required=True, help="DeepSpeed ZeRO-2 config (JSON)")
    p.add_argument("--checkpoints", required=True, help="checkpoint directory (resumed)")
    p.add_argument("--adapter", required=True, help="output: the LoRA adapter directory")
    p.add_argument("--loss-csv", required=True)
    p.add_argument("--loss-plot", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--gpus", type=int, default=0, help="GPUs the job asked for")
    return p.parse_args(argv)


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ


def n_processes(gpus: int) -> int:
    import torch

    if torch.cuda.is_available():
        return max(1, min(gpus, torch.cuda.device_count()))
    return 1


def launch(a) -> int:
    """Check the settings once, then run this script under torchrun; its exit status."""
    from skinground import train

    nproc = n_processes(a.gpus)
    train.load_deepspeed_config(a.deepspeed)
    train.gradient_accumulation(a.train["global_batch"], a.train["per_device_batch"], nproc)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), os.path.abspath(__file__), *sys.argv[1:]]
    log.info("launching %d training process(es): %s", nproc, " ".join(cmd[:6]))
    return subprocess.call(cmd)


def work(a) -> None:
    from skinground import train
    from skinground.io import write_json

    summary = train.train(
        base=a.base, tuples=a.tuples, images=a.images, model_cfg=a.model, train_cfg=a.train,
        deepspeed_config=a.deepspeed, checkpoint_dir=a.checkpoints, adapter_dir=a.adapter,
        loss_csv=a.loss_csv, loss_plot=a.loss_plot,
    )
    if train.is_main_process():
        write_json(a.summary, summary)
        log.info("summary: %s", json.dumps(summary))


def run() -> None:
    a = arguments()
    if not under_launcher():
        sys.exit(launch(a))
    work(a)


if __name__ == "__main__":
    cli.main(run)
