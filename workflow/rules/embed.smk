# Embedding stage: sharded extraction per (model, split, shard) -> one file per
# (model, split, space) -> a FAISS index per (model, space) over the train images.

rule embed_shard:
    """h_im and the 16 h_im,a (tuned), h_im (untuned) or MONET features for one shard."""
    input:
        unpack(embed_model_inputs),
        images=config["data"]["images"],
        ids=res("split/{split}.txt"),
        lib=lib("embed"),
    output:
        res("embed/{model}/{split}/shard{shard}.npz"),
    wildcard_constraints:
        model="|".join(plan.EMBED_MODELS),
        split="|".join(plan.SPLITS),
        shard=r"\d+",
    params:
        pixels=lambda wildcards: None if wildcards.model == "monet" else PIXELS,
        attributes=lambda wildcards: config["attributes"] if wildcards.model == "tuned" else {},
        batch_images=config["embed"]["batch_images"],
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
    script:
        "../scripts/embed.py"


rule merge_embeddings:
    """One embedding space of one (model, split), merged over its shards."""
    input:
        shards=expand(res("embed/{{model}}/{{split}}/shard{shard}.npz"), shard=range(N_SHARDS)),
        lib=lib("merge_embeddings"),
    output:
        res("embed/{model}/{split}/{space}.npz"),
    wildcard_constraints:
        model="|".join(plan.EMBED_MODELS),
        split="|".join(plan.SPLITS),
        space="|".join([plan.IMAGE_SPACE, *ATTRIBUTES]),
    log:
        res("logs/embed/merge_{model}_{split}_{space}.log"),
    conda:
        CPU_ENV
    script:
        "../scripts/merge_embeddings.py"


rule build_index:
    """FAISS IndexFlatIP (exact cosine) over the train images of one space."""
    input:
        train=res("embed/{model}/train/{space}.npz"),
        lib=lib("build_index"),
    output:
        res("index/{model}/{space}.faiss"),
    wildcard_constraints:
        model="|".join(plan.EMBED_MODELS),
        space="|".join([plan.IMAGE_SPACE, *ATTRIBUTES]),
    log:
        res("logs/index/{model}_{space}.log"),
    conda:
        GPU_ENV
    script:
        "../scripts/build_index.py"
