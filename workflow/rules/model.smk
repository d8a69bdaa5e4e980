# Model stage: (demo) tiny models -> LoRA fine-tuning under DeepSpeed -> predictions, Fig. 2.

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
    last checkpoint when an interrupted job is rerun. The one rule with a command line: its
    script relaunches itself under torchrun."""
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
        script=untracked(src("workflow/scripts/train.py")),
        base=weights_path("base"),
        pixels=json.dumps(PIXELS),
        train=json.dumps(section("train")),
        # logging and checkpoint cadence, loader workers: they rerun nothing
        bookkeeping=untracked(json.dumps(bookkeeping("train", config["train"]))),
        checkpoints=res(out.CHECKPOINTS),
    shell:
        "python {params.script:q} --base {params.base:q} --tuples {input.tuples:q}"
        " --images {input.images:q} --pixels {params.pixels:q} --train {params.train:q}"
        " --bookkeeping {params.bookkeeping:q} --deepspeed {input.deepspeed:q}"
        " --checkpoints {params.checkpoints:q} --adapter {output.adapter:q}"
        " --loss-csv {output.loss_csv:q} --loss-plot {output.loss_plot:q}"
        " --summary {output.summary:q} --gpus {resources.gpu} > {log:q} 2>&1"


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
        model="|".join(PREDICT_MODELS),
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
        model="|".join(PREDICT_MODELS),
    conda:
        CPU_ENV
    params:
        code=code("merge_predictions"),
    script:
        "../scripts/merge_predictions.py"


rule r2:
    """R² per attribute of the tuned model's answers (unparsable answers counted), and
    Fig. 2."""
    input:
        predictions=res(out.PREDICTIONS, model="tuned"),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        test=rules.split.output.test,
    output:
        csv=reported(
            res(out.R2_CSV),
            "r2",
            "Training and prediction",
            item="R² (table)",
            model="tuned",
            seed=TRAIN_SEED,
        ),
        markdown=res(out.R2_MD),
        groups_csv=res(out.R2_GROUPS),
        fig_pdf=figure("fig2_r2", "pdf"),
        fig_png=reported(
            figure("fig2_r2", "png"),
            "fig2",
            "Training and prediction",
            item="Fig. 2",
            model="tuned",
            seed=TRAIN_SEED,
        ),
    log:
        log("r2"),
    conda:
        CPU_ENV
    params:
        code=code("r2"),
        attributes=config["attributes"],
        groups=PREDICTED_GROUPS,
        stats=BOOTSTRAP,
    script:
        "../scripts/r2.py"


if "untuned" in PREDICT_MODELS:

    rule r2_untuned:
        """The untuned model's R² per attribute in a table of its own (not Fig. 2): with the
        strict parser, and with the first number anywhere in the answer."""
        input:
            predictions=res(out.PREDICTIONS, model="untuned"),
            manifest=rules.manifest.output.manifest,
            train=rules.split.output.train,
        output:
            csv=reported(
                res(out.R2_UNTUNED_CSV),
                "r2_untuned",
                "Training and prediction",
                item="R², untuned (table)",
                model="untuned",
            ),
            markdown=res(out.R2_UNTUNED_MD),
        log:
            log("r2_untuned"),
        conda:
            CPU_ENV
        params:
            code=code("r2_untuned"),
            attributes=config["attributes"],
        script:
            "../scripts/r2_untuned.py"
