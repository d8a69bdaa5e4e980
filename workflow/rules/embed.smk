# Embedding stage: sharded extraction per (model, split, shard) -> one file per
# (model, split, space) -> a FAISS index per (model, space) over the train images.

rule embed_shard:
    """h_im and the 16 h_im,a (tuned), h_im (untuned) or MONET features for one shard."""
    input:
        unpack(embed_model_inputs),
        images=config["data"]["images"],
        ids=res("split/{split}.txt"),
        code=code("embed"),
    output:
        res("embed/{model}/{split}/shard{shard}.npz"),
    wildcard_constraints:
        model="|".join(EMBED_MODELS),
        split="|".join(SPLITS),
        shard=r"\d+",
    params:
        model_args=embed_model_args,
        pixels=lambda wildcards: "null" if wildcards.model == "monet" else PIXELS,
        questions=lambda wildcards: (
            json.dumps(QUESTION_OF) if wildcards.model == "tuned" else "{}"
        ),
        embed=json.dumps({"batch_images": config["embed"]["batch_images"]}),
        shards=N_SHARDS,
    threads: 1
    resources:
        gpu=0,
    log:
        res("logs/embed/{model}_{split}_shard{shard}.log"),
    benchmark:
        res("benchmarks/embed/{model}_{split}_shard{shard}.tsv")
    conda:
        GPU_ENV
    shell:
        "python {input.code[0]} --kind {wildcards.model} {params.model_args}"
        " --images {input.images} --ids {input.ids}"
        " --shard {wildcards.shard} --shards {params.shards} --model {params.pixels:q}"
        " --questions {params.questions:q} --embed {params.embed:q} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule merge_embeddings:
    """One embedding space of one (model, split), merged over its shards."""
    input:
        shards=expand(res("embed/{{model}}/{{split}}/shard{shard}.npz"), shard=range(N_SHARDS)),
        code=code("merge_embeddings"),
    output:
        res("embed/{model}/{split}/{space}.npz"),
    wildcard_constraints:
        model="|".join(EMBED_MODELS),
        split="|".join(SPLITS),
        space="|".join(["im", *ATTRIBUTES]),
    log:
        res("logs/embed/merge_{model}_{split}_{space}.log"),
    conda:
        CPU_ENV
    shell:
        "python {input.code[0]} --shards {input.shards} --space {wildcards.space}"
        " --out {output} > {log} 2>&1"


rule build_index:
    """FAISS IndexFlatIP (exact cosine) over the train images of one space."""
    input:
        train=res("embed/{model}/train/{space}.npz"),
        code=code("build_index"),
    output:
        res("index/{model}/{space}.faiss"),
    wildcard_constraints:
        model="|".join(EMBED_MODELS),
        space="|".join(["im", *ATTRIBUTES]),
    log:
        res("logs/index/{model}_{space}.log"),
    conda:
        GPU_ENV
    shell:
        "python {input.code[0]} --train {input.train} --out {output} > {log} 2>&1"
