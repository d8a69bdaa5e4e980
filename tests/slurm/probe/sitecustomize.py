"""Test probe (tests/test_slurm.py): every Python process started with this directory on
PYTHONPATH appends what it was started as and the GPUs/SLURM job it was given to the JSON-lines
file named by SKINGROUND_PROBE. Nothing else; no effect when SKINGROUND_PROBE is unset."""

import json
import os
import sys

_path = os.environ.get("SKINGROUND_PROBE")
if _path:
    _record = {
        "argv": list(sys.argv),
        "pid": os.getpid(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **{k: os.environ.get(k) for k in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION",
                                          "SLURM_STEP_ID", "SLURM_CPUS_PER_TASK")},
    }
    with open(_path, "a") as _f:
        _f.write(json.dumps(_record) + "\n")
