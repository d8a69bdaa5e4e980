# Embedding stage: sharded extraction per (model, split, shard) -> one file per
# (model, split, space) -> a FAISS index per (model, space) over the train images.


rule embed_shard:
    """h_im and the 16 h_im,a (tuned), h_im (untuned) or an image encoder's features
    (model.encoders: MONET, ...) for one shard."""
    input:
        unpack(embed_model_inputs),
        images=config["data"]["images"],
        ids=res(out.SPLIT_IDS),
    output:
        res(out.EMBED_SHARD),
    log:
        log("embed/{model}_{split}_shard{shard}"),
    benchmark:
        benchmark("embed/{model}_{split}_shard{shard}")
    wildcard_constraints:
        model="|".join(EMBED_MODELS),
        split="|".join(plan.SPLITS),
        shard=r"\d+",
    conda:
        GPU_ENV
    threads: 1
    resources:
        gpu=0,
    params:
        code=code("embed"),
        # the model's preprocessing: the encoder's own (a change reruns only its jobs), or
        # Qwen2-VL's pixel budget
        preprocessing=lambda wildcards: (
            ENCODERS[wildcards.model]["preprocessing"] if wildcards.model in ENCODERS else PIXELS
        ),
        # an encoder's format (clip, siglip); none for Qwen2-VL
        encoder_format=lambda wildcards: (
            ENCODERS[wildcards.model]["format"] if wildcards.model in ENCODERS else None
        ),
        questions=lambda wildcards: ATTRIBUTE_QUESTIONS if wildcards.model == "tuned" else {},
        # where h_im,a is read (only the tuned model asks questions: a change reruns only it)
        h_ima_token=lambda wildcards: (
            config["embed"]["h_ima_token"] if wildcards.model == "tuned" else None
        ),
        image_space=True,
        batch_images=untracked(config["embed"]["batch_images"]),
        shards=N_SHARDS,
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
        ids=res(out.SPLIT_IDS),
    output:
        res(out.GROUP_SHARD),
    log:
        log("embed/groups_{split}_shard{shard}"),
    benchmark:
        benchmark("embed/groups_{split}_shard{shard}")
    wildcard_constraints:
        split="|".join(plan.SPLITS),
        shard=r"\d+",
    conda:
        GPU_ENV
    threads: 1
    resources:
        gpu=0,
    params:
        code=code("embed"),
        preprocessing=PIXELS,
        questions=GROUP_QUESTIONS,
        h_ima_token=config["embed"]["h_ima_token"],
        image_space=False,
        batch_images=untracked(config["embed"]["batch_images"]),
        shards=N_SHARDS,
    script:
        "../scripts/embed.py"


rule merge_embeddings:
    """One embedding space of one (model, split), merged over its shards."""
    input:
        shards=embedding_shards,
    output:
        res(out.SPACE),
    log:
        log("embed/merge_{model}_{split}_{space}"),
    benchmark:
        benchmark("merge/{model}_{split}_{space}")
    wildcard_constraints:
        model="|".join(EMBED_MODELS),
        split="|".join(plan.SPLITS),
        space="|".join(SPACES),
    conda:
        CPU_ENV
    params:
        code=code("merge_embeddings"),
    script:
        "../scripts/merge_embeddings.py"


rule build_index:
    """FAISS IndexFlatIP (exact cosine) over the train images of one space."""
    input:
        train=res(out.SPACE, split="train"),
    output:
        res(out.INDEX),
    log:
        log("index/{model}_{space}"),
    benchmark:
        benchmark("index/{model}_{space}")
    wildcard_constraints:
        model="|".join(EMBED_MODELS),
        space="|".join(SPACES),
    conda:
        CPU_ENV
    params:
        code=code("build_index"),
    script:
        "../scripts/build_index.py"
