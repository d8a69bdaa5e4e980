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
        # the model's preprocessing: MONET's, or Qwen2-VL's pixel budget
        pixels=lambda wildcards: (
            config["model"]["monet_preprocessing"] if wildcards.model == "monet" else PIXELS
        ),
        questions=lambda wildcards: ATTRIBUTE_QUESTIONS if wildcards.model == "tuned" else {},
        # where h_im,a is read (only the tuned model asks questions: a change reruns only it)
        h_ima_token=lambda wildcards: (
            config["embed"]["h_ima_token"] if wildcards.model == "tuned" else None
        ),
        image_space=True,
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


rule embed_groups:
    """The composed embeddings h_im,G of every group for one shard (tuned model): the same
    prefix-shared pass, the group questions as the suffixes. A job of its own, so a change to
    a group reruns only what depends on it."""
    input:
        base=weights("base"),
        adapter=rules.train.output.adapter,
        images=config["data"]["images"],
        ids=res("split/{split}.txt"),
        lib=lib("embed"),
    output:
        res("embed/tuned/{split}/groups/shard{shard}.npz"),
    wildcard_constraints:
        split="|".join(plan.SPLITS),
        shard=r"\d+",
    params:
        pixels=PIXELS,
        questions=GROUP_QUESTIONS,
        h_ima_token=config["embed"]["h_ima_token"],
        image_space=False,
        batch_images=config["embed"]["batch_images"],
        shards=N_SHARDS,
    threads: 1
    resources:
        gpu=0,
    log:
        res("logs/embed/groups_{split}_shard{shard}.log"),
    benchmark:
        res("benchmarks/embed/groups_{split}_shard{shard}.tsv")
    conda:
        GPU_ENV
    script:
        "../scripts/embed.py"


rule merge_embeddings:
    """One embedding space of one (model, split), merged over its shards."""
    input:
        shards=embedding_shards,
        lib=lib("merge_embeddings"),
    output:
        res("embed/{model}/{split}/{space}.npz"),
    wildcard_constraints:
        model="|".join(plan.EMBED_MODELS),
        split="|".join(plan.SPLITS),
        space="|".join(SPACES),
    log:
        res("logs/embed/merge_{model}_{split}_{space}.log"),
    benchmark:
        res("benchmarks/merge/{model}_{split}_{space}.tsv")
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
        space="|".join(SPACES),
    log:
        res("logs/index/{model}_{space}.log"),
    benchmark:
        res("benchmarks/index/{model}_{space}.tsv")
    conda:
        CPU_ENV
    script:
        "../scripts/build_index.py"
