"""LoRA fine-tuning of Qwen2-VL on the training tuples, under DeepSpeed ZeRO-2.

Launched plainly (``python train.py ...``), the script becomes torchrun's agent
(``torch.distributed.run --standalone``) for one training process per GPU (min(--gpus,
visible GPUs); one process on CPU), each running this script again, and exits with their
status; under the launcher (RANK/LOCAL_RANK set) it trains. The training processes die with
the agent (``PR_SET_PDEATHSIG``), and the agent holds an exclusive lock on the checkpoint
directory, so a second trainer on the same checkpoints stops with a message.
"""

import json
import logging
import os
import sys

from skinground import script

log = logging.getLogger("skinground")


def arguments(argv=None):
    p = script.parser(__doc__)
    p.add_argument("--base", required=True, help="base Qwen2-VL model directory")
    p.add_argument("--tuples", required=True, help="training tuples (parquet)")
    p.add_argument("--images", required=True, help="train-image.hdf5 or a folder of JPEGs")
    p.add_argument("--pixels", type=script.json_arg, required=True,
                   help="the pixel budget: config model's image_size, min_pixels, max_pixels")
    p.add_argument("--train", type=script.json_arg, required=True,
                   help="config section train, less its bookkeeping keys")
    p.add_argument("--bookkeeping", type=script.json_arg, default={},
                   help="config train's bookkeeping keys (logging, checkpoints, workers)")
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
    """Check the settings once, lock the checkpoint directory, then be torchrun's agent for
    this script's training processes (they die with this process); the exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args as torchrun_args
    from torch.distributed.run import run as torchrun

    from skinground import train
    from skinground.batch import train_batch
    from skinground.checkpoints import lock_checkpoints

    nproc = n_processes(a.gpus)
    train.load_deepspeed_config(a.deepspeed)
    train_batch(a.train["global_batch"], a.train["per_device_batch"], nproc)
    lock = lock_checkpoints(a.checkpoints)  # held as long as this process lives
    args = ["--standalone", "--nproc_per_node", str(nproc), os.path.abspath(__file__),
            *sys.argv[1:]]
    log.info("launching %d training process(es) (torch.distributed.run %s)", nproc,
             " ".join(args[:3]))
    try:
        torchrun(torchrun_args(args))
    except ChildFailedError as err:
        first = next(iter(err.failures.values()), None)
        log.error("training failed (exit code %s): see its error above",
                  getattr(first, "exitcode", "?"))
        return 1
    finally:
        lock.close()
    return 0


def work(a) -> None:
    from skinground import train
    from skinground.checkpoints import die_with_parent
    from skinground.deps import code_hash
    from skinground.io import write_json

    die_with_parent()  # torchrun's agent: if it is killed, so is this worker
    summary = train.train(
        code=code_hash(__file__), base=a.base, tuples=a.tuples, images=a.images, model_cfg=a.pixels,
        train_cfg={**a.train, **a.bookkeeping},
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
    script.main(run)
