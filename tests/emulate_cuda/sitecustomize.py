"""Test-only: multi-process training on CPU the way it runs on GPUs.

On a CUDA node, Accelerate (under torchrun) picks the ``nccl`` backend and the DeepSpeed
engine, and each rank trains on its own batches. On CPU it reports one process: no backend for
the CPU device, so every rank would train the whole data alone. Put this folder first on
``PYTHONPATH`` and Accelerate picks ``gloo`` for the CPU as it picks ``nccl`` for CUDA; the
rest (DeepSpeed's init, the distributed sampler, gradient all-reduce) is the real code path.
DeepSpeed's shared-memory all-reduce op is left out (it compiles for ~50 s on the first run;
torch.distributed's gloo all-reduce does the same sum).
"""

import os

if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    import sys

    import accelerate.state
    import deepspeed.comm.torch  # noqa: F401  (deepspeed.comm.torch is torch: sys.modules)

    _prepare = accelerate.state.PartialState._prepare_backend

    def _gloo_for_cpu(self, cpu=False, sagemaker_dp=False, backend=None):
        """What CUDA gets (a distributed backend under torchrun), with gloo for nccl."""
        chosen, kind = _prepare(self, cpu, sagemaker_dp, backend)
        if kind == accelerate.state.DistributedType.NO and "LOCAL_RANK" in os.environ:
            return backend or "gloo", accelerate.state.DistributedType.MULTI_CPU
        return chosen, kind

    accelerate.state.PartialState._prepare_backend = _gloo_for_cpu
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None

if os.environ.get("SKINGROUND_TEST_BATCHES"):
    # Each batch a rank collates, as a JSON line of its tuples [isic_id, question], in
    # <SKINGROUND_TEST_BATCHES>.rank<RANK>: which tuples each rank trained on.
    import json

    import skinground.model.batches

    _collator = skinground.model.batches.collator

    def _recording_collator(*args, **kwargs):
        collate = _collator(*args, **kwargs)
        path = f"{os.environ['SKINGROUND_TEST_BATCHES']}.rank{os.environ.get('RANK', '0')}"

        def record(items):
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps([[it["isic_id"], it["question"]] for it in items]) + "\n")
            return collate(items)

        return record

    skinground.model.batches.collator = _recording_collator
