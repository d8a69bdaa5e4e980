# Model stage: (demo) tiny models -> LoRA fine-tuning under DeepSpeed -> predictions, Fig. 2.

if config["model"]["build_tiny"]:

    rule build_models:
        """Demo: a tiny Qwen2-VL and a tiny CLIP, built and saved locally."""
        input:
            lib=lib("build_models"),
        output:
            base=directory(config["model"]["base"]),
            monet=directory(config["model"]["monet"]),
        params:
            tiny=config["model"]["tiny"],
            attributes=config["attributes"],
        log:
            res("logs/build_models.log"),
        conda:
            GPU_ENV
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
        deepspeed=str(SRC / config["train"]["deepspeed"]),
        script=str(SRC / "workflow" / "scripts" / "train.py"),
        lib=lib("train"),
    output:
        adapter=directory(res("train/adapter")),
        loss_csv=res("train/loss.csv"),
        loss_plot=report(res("train/loss.png"), caption="../report/loss.rst",
                         category="Training and prediction"),
        summary=res("train/summary.json"),
    params:
        pixels=json.dumps(PIXELS),
        train=json.dumps(config["train"]),
        checkpoints=res("train/checkpoints"),
    resources:
        gpu=0,
    log:
        res("logs/train.log"),
    benchmark:
        res("benchmarks/train.tsv")
    conda:
        GPU_ENV
    shell:
        "python {input.script} --base {input.base} --tuples {input.tuples}"
        " --images {input.images} --model {params.pixels:q} --train {params.train:q}"
        " --deepspeed {input.deepspeed} --checkpoints {params.checkpoints}"
        " --adapter {output.adapter} --loss-csv {output.loss_csv}"
        " --loss-plot {output.loss_plot} --summary {output.summary}"
        " --gpus {resources.gpu} > {log} 2>&1"


rule predict_shard:
    """The answers to all attribute questions for one shard of the test images (image-once
    greedy generation)."""
    input:
        base=weights("base"),
        adapter=adapter_for,
        images=config["data"]["images"],
        test=rules.split.output.test,
        lib=lib("predict"),
    output:
        res("predict/{model}/shard{shard}.parquet"),
    wildcard_constraints:
        model="|".join(PREDICT_MODELS),
        shard=r"\d+",
    params:
        pixels=PIXELS,
        questions=PREDICT_QUESTIONS,
        predict=config["predict"],
    threads: 1
    resources:
        gpu=0,
    log:
        res("logs/predict/{model}_shard{shard}.log"),
    benchmark:
        res("benchmarks/predict/{model}_shard{shard}.tsv")
    conda:
        GPU_ENV
    script:
        "../scripts/predict.py"


rule merge_predictions:
    """One model's answers, merged over the shards (Fig. 2's input)."""
    input:
        shards=expand(res("predict/{{model}}/shard{shard}.parquet"),
                      shard=range(PREDICT_SHARDS)),
        lib=lib("merge_predictions"),
    output:
        res("predict/{model}.parquet"),
    wildcard_constraints:
        model="|".join(PREDICT_MODELS),
    log:
        res("logs/predict/merge_{model}.log"),
    conda:
        CPU_ENV
    script:
        "../scripts/merge_predictions.py"


rule r2:
    """R² per attribute of the tuned model's answers (unparsable answers counted), and
    Fig. 2."""
    input:
        predictions=res("predict/tuned.parquet"),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        lib=lib("r2"),
    output:
        csv=report(res("predict/r2.csv"), caption="../report/r2.rst",
                   category="Training and prediction"),
        markdown=res("predict/r2.md"),
        groups_csv=res("predict/r2_groups.csv"),
        fig_pdf=res("figures/fig2_r2.pdf"),
        fig_png=report(res("figures/fig2_r2.png"), caption="../report/fig2.rst",
                       category="Training and prediction"),
    params:
        attributes=config["attributes"],
        groups=PREDICTED_GROUPS,
    log:
        res("logs/r2.log"),
    conda:
        CPU_ENV
    script:
        "../scripts/r2.py"


if "untuned" in PREDICT_MODELS:

    rule r2_untuned:
        """The untuned model's R² per attribute in a table of its own (not Fig. 2): with the
        strict parser, and with the first number anywhere in the answer."""
        input:
            predictions=res("predict/untuned.parquet"),
            manifest=rules.manifest.output.manifest,
            train=rules.split.output.train,
            lib=lib("r2_untuned"),
        output:
            csv=report(res("predict/r2_untuned.csv"), caption="../report/r2_untuned.rst",
                       category="Training and prediction"),
            markdown=res("predict/r2_untuned.md"),
        params:
            attributes=config["attributes"],
        log:
            res("logs/r2_untuned.log"),
        conda:
            CPU_ENV
        script:
            "../scripts/r2_untuned.py"
