"""LoRA fine-tuning of Qwen2-VL on the training tuples, under DeepSpeed ZeRO-2.

The ``train`` rule runs this script: it writes the job's file (``skinground.model.job``: the
rule's params and paths, one JSON file beside the checkpoints), checks it once, locks the
checkpoint directory and becomes torchrun's agent (``torch.distributed.run --standalone``)
for one training process per GPU (min(the job's GPUs, visible GPUs); one process on CPU).
Each of them runs ``python train.py JOB.json`` and trains with the job's fields; the agent
exits with their status. The training processes die with the agent (``PR_SET_PDEATHSIG``),
and the lock stops a second trainer on the same checkpoints with a message.

``python train.py JOB.json`` outside torchrun launches the same way from an existing job file.
"""

import json
import logging
import os
import sys

from skinground.core import script

log = logging.getLogger("skinground")

#: The job's file, in the checkpoint directory's folder: results/<run>/train/job.json.
JOB_FILE = "job.json"


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ


def n_processes(gpus: int) -> int:
    import torch

    if torch.cuda.is_available():
        return max(1, min(gpus, torch.cuda.device_count()))
    return 1


def launch(job_path: str, entry: str) -> int:
    """Check the job once, lock the checkpoint directory, then be torchrun's agent for
    ``entry``'s training processes on ``job_path`` (they die with this process); the exit
    status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args as torchrun_args
    from torch.distributed.run import run as torchrun

    from skinground.model import train
    from skinground.model.checkpoints import lock_checkpoints
    from skinground.model.global_batch import train_batch
    from skinground.model.job import read_job

    job = read_job(job_path)
    nproc = n_processes(job["gpus"])
    train.load_deepspeed_config(job["deepspeed"])
    train_batch(job["train"]["global_batch"], job["train"]["per_device_batch"], nproc)
    lock = lock_checkpoints(job["checkpoints"])  # held as long as this process lives
    args = ["--standalone", "--nproc_per_node", str(nproc), os.path.abspath(entry),
            os.path.abspath(job_path)]
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


def work(job_path: str) -> None:
    """One training process: ``train.train`` with the job's fields."""
    from skinground.core.deps import code_hash
    from skinground.core.io import write_json
    from skinground.model import train
    from skinground.model.checkpoints import die_with_parent
    from skinground.model.job import read_job

    die_with_parent()  # torchrun's agent: if it is killed, so is this worker
    job = read_job(job_path)
    summary = train.train(
        code=code_hash(__file__), base=job["base"], tuples=job["tuples"], images=job["images"],
        pixels=job["pixels"], train_cfg=job["train"], bookkeeping=job["bookkeeping"],
        deepspeed=job["deepspeed"], checkpoints=job["checkpoints"], adapter=job["adapter"],
        loss_csv=job["loss_csv"], loss_plot=job["loss_plot"],
    )
    if train.is_main_process():
        write_json(job["summary"], summary)
        log.info("summary: %s", json.dumps(summary))


def main(snakemake) -> None:
    """The rule's job: its file written, then launched (this file runs as Snakemake's copy;
    the training processes run ``params.script``, this file in the checkout)."""
    from pathlib import Path

    from skinground.model.job import from_rule, write_job

    job = from_rule(snakemake)
    path = write_job(Path(job["checkpoints"]).parent / JOB_FILE, job)
    status = launch(str(path), snakemake.params.script)
    if status:
        sys.exit(status)


def cli() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} JOB.json")
    if under_launcher():
        work(sys.argv[1])
    else:
        sys.exit(launch(sys.argv[1], __file__))


if "snakemake" in globals():
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
elif __name__ == "__main__":
    script.main(cli)
