"""LoRA fine-tuning of Qwen2-VL on the training tuples (image, Q(a), y_a) under DeepSpeed ZeRO-2.

The loss is on the answer tokens only (and the closing ``<|im_end|>``, so the model learns to
stop); prompt, image and padding positions are labelled -100. ``train`` runs HF ``Trainer``
with a peft LoRA adapter, in every process of a ``torchrun`` launch (one per GPU; one on CPU,
with the gloo backend). An interrupted run resumes from the last complete checkpoint in the
checkpoint directory, provided it was made by the same run (same config, tuples and base
model); checkpoints of another run are removed and training starts over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from skinground.core import provenance
from skinground.core.errors import InputError
from skinground.core.io import atomic_path
from skinground.model.batches import (
    ImageGroupedSampler,
    TrainError,
    TupleDataset,
    collator,
    image_once_loss,
)
from skinground.model.checkpoints import (
    complete_checkpoints,
    mark_finished,
    prepare_checkpoints,
    run_fingerprint,
)
from skinground.model.global_batch import train_batch
from skinground.model.loading import load_qwen
from skinground.model.lora import attach_lora
from skinground.model.loss_log import loss_rows, plot_loss, write_loss_csv

log = logging.getLogger(__name__)

#: Decoded images cached in memory by default only when there are at most this many.
AUTO_CACHE_MAX_IMAGES = 20_000


# --------------------------------------------------------------------------- config checks


def load_deepspeed_config(path: str | os.PathLike) -> dict:
    """Read and check the DeepSpeed config: a JSON object with ``zero_optimization.stage`` 2."""
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"DeepSpeed config not found: {p} (train.deepspeed)")
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrainError(f"DeepSpeed config {p} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise TrainError(f"DeepSpeed config {p} must be a JSON object")
    zero = config.get("zero_optimization")
    stage = zero.get("stage") if isinstance(zero, dict) else None
    if stage != 2:
        raise TrainError(f"DeepSpeed config {p}: zero_optimization.stage must be 2 (ZeRO-2), "
                         f"got {stage!r}")
    return config


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def use_bf16(precision: str) -> bool:
    """bf16 only when asked for and a CUDA device is there; fp32 otherwise (always on CPU)."""
    return precision == "bf16" and torch.cuda.is_available()


# --------------------------------------------------------------------------- training


def training_arguments(train_cfg: Mapping, bookkeeping: Mapping, *,
                       checkpoint_dir: str | os.PathLike, deepspeed_config: str | os.PathLike,
                       world: int, bf16: bool):
    """HF ``TrainingArguments`` from the ``train`` config section: its tracked keys
    (``train_cfg``) and its ``bookkeeping`` ones (``core.sections.BOOKKEEPING``)."""
    from transformers import TrainingArguments

    per_device, accumulation = train_batch(int(train_cfg["global_batch"]),
                                           int(train_cfg["per_device_batch"]), world)
    warmup = float(train_cfg.get("warmup_ratio", 0.0))
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        learning_rate=float(train_cfg["learning_rate"]),
        lr_scheduler_type=train_cfg["lr_scheduler"],
        # A float in [0, 1) is a ratio of the total steps.
        warmup_steps=min(warmup, 0.999999),
        weight_decay=float(train_cfg["weight_decay"]),
        num_train_epochs=float(train_cfg["epochs"]),
        max_steps=int(train_cfg["max_steps"]),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        bf16=bf16,
        fp16=False,
        deepspeed=str(deepspeed_config),
        save_strategy="steps",
        save_steps=int(bookkeeping["save_steps"]),
        save_total_limit=int(bookkeeping["save_total_limit"]),
        logging_strategy="steps",
        logging_steps=int(bookkeeping["logging_steps"]),
        logging_first_step=True,
        seed=int(train_cfg["seed"]),
        dataloader_num_workers=int(bookkeeping["dataloader_workers"]),
        dataloader_persistent_workers=int(bookkeeping["dataloader_workers"]) > 0,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        save_only_model=False,
    )


def _cpu_threads(dataloader_workers: int) -> int:
    """On CPU (one training process): as many torch threads as cores this job may use, less
    one per DataLoader worker (each collates batches on a core of its own). Returns the count.
    """
    if torch.cuda.is_available():
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    n = max(1, cores - dataloader_workers)
    torch.set_num_threads(n)
    return n


def deterministic_on_cpu() -> bool:
    """On CPU, PyTorch's deterministic algorithms (returns whether they are on).

    Without them two identical demo trainings in two processes ended with different adapters
    (150 steps: final losses 1.51413300 vs 1.51413315): the forward was bit-identical, but
    the backward of the CPU kernel of scaled-dot-product attention gave gradients a few ulp
    apart from one process to the next (its heap addresses differ; repeated in one process
    it agrees with itself). Forcing SDPA's math kernel also removed it; deterministic mode
    keeps the fast kernel and was no slower on the demo model. On GPUs it is left off (cuBLAS
    would need CUBLAS_WORKSPACE_CONFIG, and some kernels have no deterministic version)."""
    if torch.cuda.is_available():
        return False
    torch.use_deterministic_algorithms(True)
    # Not also NaN-filling every torch.empty: DeepSpeed's buckets are hundreds of MB a step.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return True


def trainer_class(layout: str = "per_tuple"):
    """HF ``Trainer`` for ``train.layout``, without the per-step FLOP estimate (it walks every
    parameter of the model each step, a few % of a tiny model's step; only used for a log
    line). ``per_image``: tuples grouped by image (``ImageGroupedSampler``) and the loss of
    ``batches.image_once_loss``."""
    from transformers import Trainer

    class LoraTrainer(Trainer):
        def floating_point_ops(self, inputs) -> int:
            return 0

    if layout == "per_tuple":
        return LoraTrainer

    class ImageOnceTrainer(LoraTrainer):
        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return ImageGroupedSampler(dataset.ids, self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = image_once_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            # As Trainer.compute_loss: a loss summed over the tokens of all processes'
            # batches is scaled back up by the number of processes (DDP averages gradients).
            if (self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs
                    and num_items_in_batch is not None):
                loss = loss * self.accelerator.num_processes
            return (loss, None) if return_outputs else loss

    return ImageOnceTrainer


class _Timing:
    """A Trainer callback: wall time in optimizer steps vs between them (data loading and
    collation, logging, checkpointing)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Timing(TrainerCallback):
            def __init__(self):
                self.step_seconds = 0.0
                self.other_seconds = 0.0
                self._begin = self._end = None

            def on_step_begin(self, args, state, control, **kwargs):
                self._begin = time.perf_counter()
                if self._end is not None:
                    self.other_seconds += self._begin - self._end

            def on_step_end(self, args, state, control, **kwargs):
                self._end = time.perf_counter()
                if self._begin is not None:
                    self.step_seconds += self._end - self._begin

        return Timing()


def worker_message(err: BaseException) -> str:
    """The original message of an error a DataLoader worker raised (PyTorch re-raises it
    with the worker's traceback prepended), else the message itself."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def no_shm_comm_on_cpu(world: int) -> None:
    """DeepSpeed JIT-compiles a shared-memory all-reduce op (minutes on 2 cores) when its
    communication backend starts on CPU; one process has nothing to all-reduce with."""
    if torch.cuda.is_available() or world != 1:
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def train(*, code: str, base: str | os.PathLike, tuples: str | os.PathLike,
          images: str | os.PathLike, pixels: Mapping, train_cfg: Mapping, bookkeeping: Mapping,
          deepspeed: str | os.PathLike, checkpoints: str | os.PathLike,
          adapter: str | os.PathLike, loss_csv: str | os.PathLike,
          loss_plot: str | os.PathLike, cache_images: bool | None = None) -> dict:
    """LoRA-tune the Qwen2-VL at ``base`` on the tuples; write the adapter and the loss log.

    Run in every process of a ``torchrun`` launch, with the fields of the train job's file
    (``skinground.model.job``): ``pixels`` the pixel budget, ``train_cfg`` the ``train``
    section less its ``bookkeeping`` keys. Returns the summary (same on every rank; only rank
    0 writes ``adapter``, ``loss_csv`` and ``loss_plot``). ``code``: the
    training code's hash (``deps.code_hash`` of the entry point), part of the checkpoints'
    fingerprint. ``cache_images``: keep decoded images in memory (None: when there are at
    most ``AUTO_CACHE_MAX_IMAGES``). A finished run's checkpoints are marked finished, so a
    rerun trains from the start (``skinground.model.checkpoints``).
    """
    from transformers import set_seed

    started = time.perf_counter()
    ds_config = load_deepspeed_config(deepspeed)
    world = world_size()
    bf16 = use_bf16(train_cfg["precision"])
    no_shm_comm_on_cpu(world)
    args = training_arguments(train_cfg, bookkeeping, checkpoint_dir=checkpoints,
                              deepspeed_config=deepspeed, world=world, bf16=bf16)
    threads = _cpu_threads(int(bookkeeping["dataloader_workers"]))
    deterministic = deterministic_on_cpu()
    set_seed(int(train_cfg["seed"]))

    layout = train_cfg["layout"]
    dataset = TupleDataset(tuples, images, cache_images=False)
    n_images = dataset.n_images()
    if cache_images is None:
        cache_images = n_images <= AUTO_CACHE_MAX_IMAGES
    if cache_images:
        dataset.cache = {}
    log.info("%d tuples of %d images (%s); layout %s; %d process(es), per-device batch %d "
             "tuples, accumulation %d, %s, %d torch thread(s)", len(dataset), n_images,
             "cached in memory" if cache_images else "read per step", layout, world,
             args.per_device_train_batch_size, args.gradient_accumulation_steps,
             "bf16" if bf16 else "fp32", threads)

    with args.main_process_first(local=False, desc="checkpoint check"):
        if is_main_process():  # the others then find what it left
            t = time.perf_counter()
            fingerprint = run_fingerprint(
                code=code, base=base, tuples=tuples, images=images, pixels=pixels,
                train_cfg=train_cfg, deepspeed_cfg=ds_config, processes=world)
            log.info("fingerprint of the inputs in %.1f s", time.perf_counter() - t)
            resume = prepare_checkpoints(checkpoints, fingerprint)
        else:
            resume = (complete_checkpoints(checkpoints) or [None])[-1]

    model, processor = load_qwen(base, pixels, device="cpu",
                                 dtype=torch.bfloat16 if bf16 else torch.float32)
    data_collator = collator(layout, processor, cache_prefixes=cache_images)
    model.config.use_cache = False
    model = attach_lora(model, train_cfg["lora"])
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    timing = _Timing()
    trainer = trainer_class(layout)(model=model, args=args, train_dataset=dataset,
                                    data_collator=data_collator, callbacks=[timing])
    resumed_at = 0
    if resume is not None:
        resumed_at = json.loads((resume / "trainer_state.json").read_text())["global_step"]
        log.info("resuming from %s (step %d)", resume, resumed_at)
    t0 = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except InputError as err:  # e.g. a corrupt image met by a DataLoader worker
        raise type(err)(worker_message(err)) from None
    seconds = time.perf_counter() - t0

    state = trainer.state
    rows = loss_rows(state.log_history)
    steps_run = state.global_step - resumed_at
    summary = {
        "steps": state.global_step,
        "resumed_from_step": resumed_at,
        "steps_this_run": steps_run,
        "epochs": state.epoch,
        "first_loss": rows[0]["loss"] if rows else None,
        "final_loss": rows[-1]["loss"] if rows else None,
        "mean_train_loss": result.training_loss,
        "seconds": round(seconds, 3),
        "seconds_total": round(time.perf_counter() - started, 3),
        "steps_per_second": round(steps_run / seconds, 3) if seconds > 0 else None,
        # Of "seconds": in forward/backward/optimizer steps, and between them (data).
        "seconds_in_steps": round(timing.step_seconds, 3),
        "seconds_between_steps": round(timing.other_seconds, 3),
        "tuples": len(dataset),
        "images": n_images,
        "layout": layout,
        "processes": world,
        "per_device_batch": args.per_device_train_batch_size,
        "gradient_accumulation": args.gradient_accumulation_steps,
        "global_batch": int(train_cfg["global_batch"]),
        "precision": "bf16" if bf16 else "fp32",
        "deterministic": deterministic,
        "trainable_parameters": trainable,
        "parameters": total,
    }
    if is_main_process():
        with atomic_path(adapter, directory=True) as tmp:
            trainer.model.save_pretrained(tmp)
            provenance.write_record(tmp, fingerprint)  # what made it, for its readers
        mark_finished(checkpoints, state.global_step)
        write_loss_csv(loss_csv, rows)
        plot_loss(loss_plot, rows, title=f"LoRA fine-tuning ({state.global_step} steps)")
        log.info("adapter written to %s; loss %s -> %s over %d steps (%.1f steps/s)",
                 adapter, summary["first_loss"], summary["final_loss"], state.global_step,
                 summary["steps_per_second"] or math.nan)
    return summary
