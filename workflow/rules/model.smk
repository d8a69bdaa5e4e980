# Model stage: (demo) tiny models -> LoRA fine-tuning under DeepSpeed -> predictions.


if config["model"]["build_tiny"]:

    rule build_models:
        """Demo: a tiny Qwen2-VL and, for every encoder, a tiny CLIP or SigLIP (by its
        format), built and saved locally."""
        output:
            base=directory(config["model"]["base"]),
            # in model.encoders' order (params.formats')
            encoders=[directory(e["path"]) for e in ENCODERS.values()],
        log:
            log("build_models"),
        conda:
            GPU_ENV
        params:
            code=code("build_models"),
            tiny=config["model"]["tiny"],
            attributes=config["attributes"],
            # a stand-in follows its encoder's format only (its image size is fixed): a
            # change to an encoder's preprocessing reruns that encoder's embeddings, not this
            formats={name: e["format"] for name, e in ENCODERS.items()},
        script:
            "../scripts/build_models.py"


rule train:
    """LoRA fine-tuning of Qwen2-VL on the tuples, under DeepSpeed ZeRO-2; resumes from the
    last checkpoint when an interrupted job is rerun. Its script writes the job's params and
    paths to one file (train/job.json, ``skinground.model.job``) and relaunches itself under
    torchrun: every training process reads that file."""
    input:
        base=weights("base"),
        tuples=rules.tuples.output.tuples,
        images=config["data"]["images"],
        deepspeed=src(config["train"]["deepspeed"]),
    output:
        adapter=directory(res(out.ADAPTER)),
        loss_csv=res(out.LOSS_CSV),
        loss_plot=reported(
            res(out.LOSS_PLOT),
            "loss",
            "Training and prediction",
            item="Training loss",
            model="tuned",
            seed=TRAIN_SEED,
        ),
        summary=res(out.TRAIN_SUMMARY),
    log:
        log("train"),
    benchmark:
        benchmark("train")
    conda:
        GPU_ENV
    resources:
        gpu=0,
    params:
        code=code("train"),
        # the checkout's script, which torchrun's training processes run
        script=untracked(src("workflow/scripts/train.py")),
        base=weights_path("base"),
        pixels=PIXELS,
        train=section("train"),
        # logging and checkpoint cadence, loader workers: they rerun nothing
        bookkeeping=untracked(bookkeeping("train", config["train"])),
        checkpoints=res(out.CHECKPOINTS),
    script:
        "../scripts/train.py"


rule predict_shard:
    """The answers to all attribute questions for one shard of the test images (image-once
    greedy generation)."""
    input:
        base=weights("base"),
        adapter=adapter_for,
        images=config["data"]["images"],
        test=rules.split.output.test,
    output:
        res(out.PREDICT_SHARD),
    log:
        log("predict/{model}_shard{shard}"),
    benchmark:
        benchmark("predict/{model}_shard{shard}")
    wildcard_constraints:
        model="|".join(PREDICTED_MODELS),
        shard=r"\d+",
    conda:
        GPU_ENV
    threads: 1
    resources:
        gpu=0,
    params:
        code=code("predict"),
        pixels=PIXELS,
        questions=PREDICT_QUESTIONS,
        predict=section("predict"),
        batch_images=untracked(config["predict"]["batch_images"]),
    script:
        "../scripts/predict.py"


rule merge_predictions:
    """One model's answers, merged over the shards (Fig. 2's input)."""
    input:
        shards=expand(res(out.PREDICT_SHARD), shard=range(PREDICT_SHARDS), allow_missing=True),
    output:
        res(out.PREDICTIONS),
    log:
        log("predict/merge_{model}"),
    wildcard_constraints:
        model="|".join(PREDICTED_MODELS),
    conda:
        CPU_ENV
    params:
        code=code("merge_predictions"),
    script:
        "../scripts/merge_predictions.py"
