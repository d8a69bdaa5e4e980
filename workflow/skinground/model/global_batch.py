"""The training batch over the processes: one global batch on any number of GPUs.

Standard library only: the train script splits its batch with it, the Snakefile checks the
train job's GPUs against it at planning, and the cost and memory models plan with it.
"""

from __future__ import annotations

from skinground.core.errors import InputError


def train_batch(global_batch: int, per_device_batch: int, processes: int) -> tuple[int, int]:
    """(tuples per process and forward pass, gradient accumulation steps) for a global batch
    of ``global_batch`` tuples over ``processes`` training processes (GPUs).

    ``per_device_batch`` is the most a process takes at once (its memory); the batch it takes
    is the largest divisor of ``global_batch / processes`` not above it, so the same global
    batch trains on 1, 2, 4 or 8 GPUs (the demo's 128: 128 on one, 64 each on two). The
    global batch must split evenly over the processes."""
    if global_batch % processes:
        raise InputError(f"train.global_batch ({global_batch}) must be a multiple of the "
                         f"training processes (GPUs: {processes})")
    share = global_batch // processes
    per_device = max(d for d in range(1, min(per_device_batch, share) + 1) if share % d == 0)
    return per_device, share // per_device
