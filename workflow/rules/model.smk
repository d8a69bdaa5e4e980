# Model stage: (demo) tiny models -> LoRA fine-tuning under DeepSpeed -> predictions, Fig. 2.

if config["model"]["build_tiny"]:

    rule build_models:
        """Demo: a tiny Qwen2-VL and a tiny CLIP, built and saved locally."""
        input:
            code=code("build_models"),
        output:
            base=directory(config["model"]["base"]),
            monet=directory(config["model"]["monet"]),
        params:
            tiny=json.dumps(config["model"]["tiny"]),
            questions=json.dumps(QUESTIONS),
        log:
            res("logs/build_models.log"),
        conda:
            GPU_ENV
        shell:
            "python {input.code[0]} --tiny {params.tiny:q} --questions {params.questions:q}"
            " --base {output.base} --monet {output.monet} > {log} 2>&1"


rule train:
    """LoRA fine-tuning of Qwen2-VL on the tuples, under DeepSpeed ZeRO-2; resumes from the
    last checkpoint when an interrupted job is rerun."""
    input:
        base=config["model"]["base"],
        tuples=rules.tuples.output.tuples,
        images=config["data"]["images"],
        deepspeed=str(SRC / config["train"]["deepspeed"]),
        code=code("train"),
    output:
        adapter=directory(res("train/adapter")),
        loss_csv=res("train/loss.csv"),
        loss_plot=res("train/loss.png"),
        summary=res("train/summary.json"),
    params:
        pixels=PIXELS,
        train=section("train"),
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
        "python {input.code[0]} --base {input.base} --tuples {input.tuples}"
        " --images {input.images} --model {params.pixels:q} --train {params.train:q}"
        " --deepspeed {input.deepspeed} --checkpoints {params.checkpoints}"
        " --adapter {output.adapter} --loss-csv {output.loss_csv}"
        " --loss-plot {output.loss_plot} --summary {output.summary}"
        " --gpus {resources.gpu} > {log} 2>&1"


rule predict_shard:
    """The answers to all attribute questions for one shard of the test images (image-once
    greedy generation)."""
    input:
        base=config["model"]["base"],
        adapter=adapter_for,
        images=config["data"]["images"],
        test=rules.split.output.test,
        code=code("predict"),
    output:
        res("predict/{model}/shard{shard}.parquet"),
    wildcard_constraints:
        model="|".join(MODEL_KINDS),
        shard=r"\d+",
    params:
        pixels=PIXELS,
        questions=json.dumps(QUESTION_OF),
        predict=section("predict"),
        adapter=lambda wildcards, input: (
            f"--adapter {input.adapter}" if wildcards.model == "tuned" else ""
        ),
    resources:
        gpu=0,
    log:
        res("logs/predict/{model}_shard{shard}.log"),
    benchmark:
        res("benchmarks/predict/{model}_shard{shard}.tsv")
    conda:
        GPU_ENV
    shell:
        "python {input.code[0]} --base {input.base} {params.adapter}"
        " --images {input.images} --test-ids {input.test} --model {params.pixels:q}"
        " --attributes {params.questions:q} --predict {params.predict:q}"
        " --shard {wildcards.shard} --out {output} > {log} 2>&1"


rule merge_predictions:
    """One model's answers, merged over the shards (Fig. 2's input)."""
    input:
        shards=expand(res("predict/{{model}}/shard{shard}.parquet"),
                      shard=range(PREDICT_SHARDS)),
        code=code("merge_predictions"),
    output:
        res("predict/{model}.parquet"),
    wildcard_constraints:
        model="|".join(MODEL_KINDS),
    log:
        res("logs/predict/merge_{model}.log"),
    conda:
        CPU_ENV
    shell:
        "python {input.code[0]} --shards {input.shards} --out {output} > {log} 2>&1"


rule r2:
    """R² per attribute, tuned vs untuned (unparsable answers counted), and Fig. 2."""
    input:
        predictions=expand(res("predict/{model}.parquet"), model=MODEL_KINDS),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        code=code("r2"),
    output:
        csv=res("predict/r2.csv"),
        markdown=res("predict/r2.md"),
        fig_pdf=res("figures/fig2_r2.pdf"),
        fig_png=res("figures/fig2_r2.png"),
    params:
        labels=json.dumps(LABEL_OF),
    log:
        res("logs/r2.log"),
    conda:
        CPU_ENV
    shell:
        "python {input.code[0]} --predictions {input.predictions}"
        " --manifest {input.manifest} --train-ids {input.train}"
        " --attributes {params.labels:q} --csv {output.csv} --markdown {output.markdown}"
        " --fig-pdf {output.fig_pdf} --fig-png {output.fig_png} > {log} 2>&1"
