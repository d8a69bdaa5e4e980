"""skinground.model.predict and the Fig. 2 scripts: batched left-padded generation on the untuned
tiny Qwen2-VL, the predict script on a tiny HDF5 store, and the R² script's outputs."""

from __future__ import annotations

import h5py
import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from skinground.data.answers import parse_number
from skinground.demo import tiny
from skinground.model import batches, loading, lora
from skinground.model import prefix as P
from skinground.model import shared_cache as C
from skinground.model.predict import generate_answers, image_once_tokens

from conftest import jpeg_bytes, run_script
from reference import generate_batch, generate_per_question

SIZES = ((61, 61), (131, 100), (200, 239))  # (height, width): 4, 20 and 63 image tokens


def rgb(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class MemoryStore:
    def __init__(self, images: dict[str, Image.Image]):
        self.images = images
        self.reads: list[str] = []

    def read(self, isic_id: str) -> Image.Image:
        self.reads.append(isic_id)
        return self.images[isic_id]


@pytest.fixture(scope="module")
def attributes(repo_config) -> dict:
    return repo_config["attributes"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, attributes):
    corpus = [spec["question"] for spec in attributes.values()]
    corpus += [f"{v:.2f}" for v in np.linspace(-40, 300, 30)]
    return tiny.build_tiny_qwen2vl(tmp_path_factory.mktemp("predict") / "qwen2vl",
                                     corpus=corpus, image_size=112)


@pytest.fixture(scope="module")
def native(tiny_base):
    """The tiny model with a native-resolution budget: images of different sizes give
    different numbers of image tokens, so a batch needs real left padding."""
    return loading.load_mllm(tiny_base, min_pixels=3136, max_pixels=262144)


@pytest.mark.parametrize("budget", ["native", "square"])
def test_batched_left_padded_equals_one_at_a_time(tiny_base, native, attributes, budget):
    model, processor = native if budget == "native" else loading.load_mllm(tiny_base,
                                                                          image_size=112)
    three = {a: spec["question"] for a, spec in list(attributes.items())[:3]}
    store = MemoryStore({f"ISIC_{k}": rgb(h, w, k) for k, (h, w) in enumerate(SIZES)})
    ids = list(store.images)
    batched = generate_per_question(model, processor, store, ids, three, batch_size=4,
                                    max_new_tokens=6)
    single = generate_per_question(model, processor, store, ids, three, batch_size=1,
                                   max_new_tokens=6)
    assert batched.equals(single)
    assert batched.height == len(ids) * len(three)
    assert batched["isic_id"].to_list() == [i for i in ids for _ in three]
    assert batched["attribute"].to_list() == list(three) * len(ids)
    assert processor.tokenizer.padding_side == "right"  # restored
    assert batched.schema == {"isic_id": pl.String, "attribute": pl.String,
                              "answer": pl.String, "value": pl.Float64}
    assert batched["value"].to_list() == [parse_number(t) for t in batched["answer"]]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_base, attributes, repo_config):
    """The tiny model LoRA-tuned for a few hundred steps to answer 3 questions about 6 images
    with numbers (so answers end at <|im_end|> after different lengths), its adapter saved and
    loaded back merged, as the predict rule loads it; native resolution."""
    model, processor = loading.load_mllm(tiny_base, min_pixels=3136, max_pixels=262144)
    cfg = dict(repo_config["train"]["lora"], r=8, alpha=16, dropout=0.0,
               modules_to_save=["lm_head", "embed_tokens", "visual.merger"])
    torch.manual_seed(0)
    peft_model = lora.attach_lora(model, cfg).train()
    specs = list(attributes.values())[:3]
    images = [rgb(h, w, k) for k, (h, w) in enumerate(SIZES + ((90, 70), (150, 150), (64, 80)))]
    items = [{"isic_id": str(k), "image": im, "question": spec["question"],
              "answer": f"{(k + 1) * (j + 2) * 1.37:.{2 if j else 1}f}"}
             for k, im in enumerate(images) for j, spec in enumerate(specs)]
    batch = batches.ImageOnceCollator(processor)(items)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(150):
        loss = batches.image_once_loss(peft_model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    adapter = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(adapter)
    base, processor = loading.load_mllm(tiny_base, min_pixels=3136, max_pixels=262144)
    return lora.attach_adapter(base, adapter), processor, images, specs


def assert_image_once_equals_generate(model, processor, images, questions, max_new_tokens):
    """Image-once greedy tokens == one ``generate`` per image over its questions (cut at the
    stop token); returns the image-once tokens."""
    once = image_once_tokens(model, processor, images, questions, max_new_tokens=max_new_tokens)
    tok = processor.tokenizer
    stops = {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    for k, image in enumerate(images):
        reference = generate_batch(model, processor, [image] * len(questions), questions,
                                   max_new_tokens=max_new_tokens, tokens=True)
        for j, ref in enumerate(reference):
            ref = ref[: next((i for i, t in enumerate(ref) if t in stops), len(ref))]
            assert once[k * len(questions) + j] == ref, (k, j)
    return once


@pytest.mark.parametrize("which", ["tuned", "untuned"])
def test_image_once_generation_equals_per_question_generate(which, tuned, native):
    model, processor, images, specs = tuned
    if which == "untuned":
        model, processor = native
    questions = [spec["question"] for spec in specs]
    once = assert_image_once_equals_generate(model, processor, images, questions, 8)
    tok = processor.tokenizer
    texts = tok.batch_decode(once, skip_special_tokens=True)
    if which == "tuned":  # it answers with numbers of different lengths, then stops
        assert all(parse_number(t) is not None for t in texts), texts
        assert len({len(t) for t in once}) > 1 and max(len(t) for t in once) < 8


def test_generate_answers_image_once_equals_per_question(tuned):
    model, processor, images, specs = tuned
    store = MemoryStore({f"ISIC_{k}": im for k, im in enumerate(images)})
    ids = list(store.images)
    attrs = {f"a{j}": spec["question"] for j, spec in enumerate(specs)}
    once = generate_answers(model, processor, store, ids, attrs, batch_images=4,
                            max_new_tokens=8)
    reference = generate_per_question(model, processor, store, ids, attrs, batch_size=5,
                                      max_new_tokens=8)
    assert once.equals(reference)
    assert once["value"].null_count() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shared_prefix_attention_equals_attention_over_the_concatenated_keys(dtype):
    """One new token per row, GQA heads, left-padded prefixes and right-padded row keys: the
    two-part attention (per image, then per row, joined by log-sum-exp) equals SDPA over
    each row's own prefix copy + its keys, with the same mask; and so does a suffix pass
    (several new tokens per row, causal over the row's own)."""
    gen = torch.Generator().manual_seed(0)
    n, group, kv, per_kv, lp, lr, d = 3, 4, 2, 2, 7, 5, 8
    rows = n * group

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    pk, pv = rand(n, kv, lp, d), rand(n, kv, lp, d)
    rk, rv = rand(rows, kv, lr, d), rand(rows, kv, lr, d)
    q = rand(rows, kv * per_kv, 1, d)
    p_keep = torch.ones(n, lp, dtype=torch.bool)
    p_keep[0, :3] = False  # left padding
    r_keep = torch.ones(rows, lr, dtype=torch.bool)
    r_keep[1, 2:4] = False  # a short suffix's pads, then its generated token

    def bias(keep):
        return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, float("-inf"))[
            :, None, None, :]

    shared = C.SharedKV(pk, pv, bias(p_keep), rk, rv, bias(r_keep))
    out, _ = C.shared_prefix_attention(None, q, shared, None, None, scaling=d ** -0.5)
    keys = torch.cat([pk.repeat_interleave(group, 0), rk], 2).repeat_interleave(per_kv, 1)
    values = torch.cat([pv.repeat_interleave(group, 0), rv], 2).repeat_interleave(per_kv, 1)
    keep = torch.cat([p_keep.repeat_interleave(group, 0), r_keep], 1)[:, None, None, :]
    reference = torch.nn.functional.scaled_dot_product_attention(
        q, keys, values, attn_mask=keep, scale=d ** -0.5).transpose(1, 2)
    assert out.shape == reference.shape == (rows, 1, kv * per_kv, d)
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, reference, atol=tol, rtol=tol)
    with pytest.raises(ValueError, match="one token per row"):
        C.shared_prefix_attention(None, q.expand(-1, -1, 2, -1), shared, None, None, scaling=1.0)
    # A suffix pass: lr new tokens per row, causal over the row's own keys.
    qs = rand(rows, kv * per_kv, lr, d)
    suffix = C.SharedKV(pk, pv, bias(p_keep), rk, rv, None)
    out, _ = C.shared_prefix_attention(None, qs, suffix, None, None, scaling=d ** -0.5)
    causal = torch.ones(lr, lr, dtype=torch.bool).tril()
    keep = torch.cat([p_keep.repeat_interleave(group, 0)[:, None, :].expand(-1, lr, -1),
                      causal.expand(rows, -1, -1)], 2)[:, None]
    reference = torch.nn.functional.scaled_dot_product_attention(
        qs, keys, values, attn_mask=keep, scale=d ** -0.5).transpose(1, 2)
    assert out.shape == reference.shape == (rows, lr, kv * per_kv, d)
    torch.testing.assert_close(out, reference, atol=tol, rtol=tol)
    # Each part's two ways (the CPU kernel, and the matrix products GPUs run) agree.
    q_rows = q.reshape(rows, kv, per_kv, d)
    (o_k, l_k), (o_m, l_m) = (C.attention_lse(q_rows, rk, rv, bias(r_keep), 0.5, kernel=k)
                              for k in (True, False))
    torch.testing.assert_close(o_m, o_k, atol=tol, rtol=tol)
    torch.testing.assert_close(l_m, l_k.to(l_m.dtype), atol=tol, rtol=tol)


def gathered_suffixes(model, prefix: P.Prefix, rows: torch.Tensor, suffix_ids: torch.Tensor,
                      suffix_mask: torch.Tensor) -> torch.Tensor:
    """The reference suffix pass: each row's prefix keys gathered into a DynamicCache (one
    copy per row) and the suffixes through the model's own attention; the last-layer states
    [R, Ls, d]. ``prefix.cache`` becomes the gathered cache (extended with the suffixes),
    ``prefix.mask`` the rows' combined mask."""
    backbone = P.backbone_of(model)
    mask = torch.cat([prefix.mask[rows], suffix_mask], dim=1)
    prefix.cache.batch_select_indices(rows)
    out = backbone(input_ids=suffix_ids, attention_mask=mask,
                   position_ids=P.suffix_positions(prefix.next_position[rows],
                                                   suffix_ids.shape[1]),
                   use_cache=True, **{P.cache_kwarg(backbone): prefix.cache})
    prefix.mask = mask
    return out.last_hidden_state


@pytest.mark.parametrize("passes", [1, 2])
def test_shared_prefix_suffixes_and_decoding_equal_the_gathered_cache(native, attributes,
                                                                      monkeypatch, passes):
    """The suffix passes (one, or two by length) and the decoding steps from
    SharedPrefixCache give the states of the same suffixes and steps over the per-row
    gathered DynamicCache (gathered_suffixes), with mixed image sizes; the decoder's own attention
    is restored afterwards."""
    model, processor = native
    questions = [spec["question"] for spec in list(attributes.values())[:4]]
    images = [rgb(h, w, k) for k, (h, w) in enumerate(SIZES)]
    tok = processor.tokenizer
    _, suffixes = P.split_template(processor, questions)
    s_ids, s_mask = P.pad_rows([tok(s, add_special_tokens=False)["input_ids"]
                                for s in suffixes], tok.pad_token_id)
    monkeypatch.setattr(P, "BUCKET_MIN_SAVING", 1.0 if passes == 1 else 0.0)
    assert len(P.length_buckets(s_mask.sum(1))) == passes
    n, n_q = len(images), len(questions)
    rows = torch.arange(n).repeat_interleave(n_q)
    lengths = s_mask.sum(1).repeat(n)
    tokens = torch.randint(0, len(tok), (3, n * n_q), generator=torch.Generator().manual_seed(1))
    backbone = P.backbone_of(model)
    decoder, kwarg = backbone.language_model, P.cache_kwarg(backbone)

    def steps(shared: bool) -> list[torch.Tensor]:
        with torch.no_grad():
            prefix = P.run_prefix(model, P.encode_prefixes(processor, images))
            if shared:
                run = P.run_shared_suffixes(model, prefix, s_ids, s_mask, room=len(tokens))
                out = [run.last]
                with C.shared_prefix_attention_for(decoder) as masks:
                    for k, token in enumerate(tokens):
                        out.append(decoder(input_ids=token[:, None], attention_mask=masks,
                                           position_ids=P.suffix_positions(run.position + k, 1),
                                           **{kwarg: run.cache}).last_hidden_state[:, 0])
                    with pytest.raises(ValueError, match="room"):
                        decoder(input_ids=token[:, None], attention_mask=masks,
                                position_ids=P.suffix_positions(run.position, 1),
                                **{kwarg: run.cache})
                return out
            position = prefix.next_position[rows] + lengths
            states = gathered_suffixes(model, prefix, rows, s_ids.repeat(n, 1), s_mask.repeat(n, 1))
            out = [states[torch.arange(n * n_q), lengths - 1]]
            mask = prefix.mask
            for k, token in enumerate(tokens):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                out.append(decoder(input_ids=token[:, None], attention_mask=mask,
                                   position_ids=P.suffix_positions(position + k, 1),
                                   **{kwarg: prefix.cache}).last_hidden_state[:, 0])
            return out

    attention = decoder.config._attn_implementation
    for got, want in zip(steps(True), steps(False), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert decoder.config._attn_implementation == attention != C.SHARED_PREFIX_ATTENTION


def test_left_padded_logits_match_single(native, attributes):
    """The premise of batching: with left padding, each row's next-token logits equal the
    unpadded sequence's."""
    model, processor = native
    questions = [spec["question"] for spec in list(attributes.values())[:3]]
    images = [rgb(h, w, k) for k, (h, w) in enumerate(SIZES)]
    prompts = [loading.chat_prompt(processor, q) for q in questions]
    processor.tokenizer.padding_side = "left"
    try:
        batch = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    finally:
        processor.tokenizer.padding_side = "right"
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == 3  # real padding
    with torch.no_grad():
        last = model(**batch).logits[:, -1]
        for k, (im, prompt) in enumerate(zip(images, prompts, strict=True)):
            one = processor(images=[im], text=[prompt], return_tensors="pt")
            torch.testing.assert_close(last[k], model(**one).logits[0, -1], atol=1e-4,
                                       rtol=1e-4)


def test_generate_batch_returns_only_new_text(native):
    model, processor = native
    out = generate_batch(model, processor, [rgb(80, 80, 0)], ["What is the area?"],
                         max_new_tokens=3)
    assert len(out) == 1 and "assistant" not in out[0] and "<|" not in out[0]


def run_predict(tmp_path, tiny_base, attributes, *, shard: int, shards: int, out,
                max_test_images=3):
    h5 = tmp_path / "train-image.hdf5"
    ids = ["ISIC_0000003", "ISIC_0000001", "ISIC_0000002", "ISIC_0000000"]
    if not h5.exists():
        with h5py.File(h5, "w") as f:
            for k, isic_id in enumerate(ids):
                f.create_dataset(isic_id, data=np.bytes_(jpeg_bytes(61 + 40 * k, k)))
        (tmp_path / "test.txt").write_text("\n".join(ids) + "\n")
    proc = run_script(
        "predict", tmp_path, log=out.with_suffix(".log"),
        input={"base": tiny_base, "adapter": [], "images": h5, "test": tmp_path / "test.txt"},
        output={"out": out}, wildcards={"model": "untuned", "shard": shard},
        params={"pixels": {"image_size": None, "min_pixels": 3136, "max_pixels": 262144},
                "questions": {a: s["question"] for a, s in list(attributes.items())[:2]},
                "predict": {"max_test_images": max_test_images, "max_new_tokens": 4,
                            "shards": shards},
                "batch_images": 2})
    assert proc.returncode == 0, proc.log + proc.stderr
    return sorted(ids), proc


def merge(tmp_path, shards, out):
    return run_script("merge_predictions", tmp_path, input={"shards": list(shards)},
                      output={"out": out}, log=out.with_suffix(".log"))


def test_predict_script_end_to_end(tmp_path, tiny_base, attributes):
    out = tmp_path / "pred" / "untuned.parquet"
    ids, proc = run_predict(tmp_path, tiny_base, attributes, shard=0, shards=1, out=out)
    pred = pl.read_parquet(out)
    assert pred.columns == ["model", "isic_id", "attribute", "answer", "value"]
    assert pred.height == 3 * 2
    assert pred["model"].unique().to_list() == ["untuned"]
    assert pred["isic_id"].unique(maintain_order=True).to_list() == ids[:3]
    assert "unparsable" in proc.log
    assert not list(out.parent.glob(".*.tmp"))


def test_sharded_predictions_merge_to_the_unsharded_ones(tmp_path, tiny_base, attributes):
    whole = tmp_path / "whole.parquet"
    run_predict(tmp_path, tiny_base, attributes, shard=0, shards=1, out=whole,
                max_test_images=None)
    parts = [tmp_path / f"shard{i}.parquet" for i in range(3)]
    for i, part in enumerate(parts):
        run_predict(tmp_path, tiny_base, attributes, shard=i, shards=3, out=part,
                    max_test_images=None)
    assert [pl.read_parquet(p).height for p in parts] == [4, 2, 2]  # 2, 1, 1 images
    merged = tmp_path / "merged.parquet"
    proc = merge(tmp_path, parts, merged)
    assert proc.returncode == 0, proc.stderr
    assert pl.read_parquet(merged).equals(pl.read_parquet(whole))
    # A shard given twice, or a file that is not a predictions shard: named, nothing written.
    bad = tmp_path / "bad.parquet"
    for shards, message in (([parts[0], parts[1], parts[1]], f"{parts[1]} repeats image"),
                            ([parts[0], tmp_path / "test.txt"], "not a readable predictions")):
        proc = merge(tmp_path, shards, bad)
        assert proc.returncode == 1 and message in proc.log, proc.log
        assert not bad.exists()


def _fabricated(tmp_path, attributes):
    """A manifest (train + test rows) and tuned/untuned predictions with known R²."""
    rng = np.random.default_rng(0)
    attrs = list(attributes)
    train = [f"ISIC_1{i:06d}" for i in range(30)]
    test = [f"ISIC_2{i:06d}" for i in range(20)]
    values = rng.normal(10, 3, (50, len(attrs)))
    values[35, 0] = np.nan  # a missing test truth
    patients = [f"IP_{i % 3}" for i in range(30)] + [f"IP_{3 + i % 5}" for i in range(20)]
    manifest = pl.DataFrame({"isic_id": train + test, "patient_id": patients,
                             "target": [0] * 50,
                             **{a: values[:, k] for k, a in enumerate(attrs)}})
    manifest = manifest.with_columns(pl.col(a).fill_nan(None) for a in attrs)
    truth = values[30:]
    rows = []
    for k, a in enumerate(attrs):
        for j, isic_id in enumerate(test):
            t = 0.0 if np.isnan(truth[j, k]) else truth[j, k]
            good = t + rng.normal(0, 0.3 + 0.1 * k)
            bad = 10 + rng.normal(0, 3 * (1 + k % 4))  # R² from about -1 to -15
            tuned = None if (k == 3 and j < 4) else good  # 4 unparsable answers
            rows.append(("tuned", isic_id, a, "x", tuned))
            # the untuned model answers in sentences: strict parsing fails, lenient finds it
            rows.append(("untuned", isic_id, a,
                         "none" if k == 5 else f"It is about {bad:.2f} units.", None))
    schema = {"model": pl.String, "isic_id": pl.String, "attribute": pl.String,
              "answer": pl.String, "value": pl.Float64}
    pred = pl.DataFrame(rows, schema=schema, orient="row")
    paths = []
    for name in ("tuned", "untuned"):
        path = tmp_path / f"{name}.parquet"
        pred.filter(pl.col("model") == name).write_parquet(path)
        paths.append(path)
    mpath = tmp_path / "manifest.parquet"
    manifest.write_parquet(mpath)
    train_txt = tmp_path / "train.txt"
    train_txt.write_text("\n".join(train) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(test) + "\n")
    return paths, mpath, train_txt


def test_r2_script_writes_table_and_figure(tmp_path, attributes):
    preds, manifest, train_txt = _fabricated(tmp_path, attributes)
    out = tmp_path / "fig2"
    proc = run_script(
        "r2", tmp_path, input={"predictions": preds[0], "manifest": manifest, "train": train_txt,
                               "test": tmp_path / "test.txt"},
        output={"csv": out / "r2.csv", "markdown": out / "r2.md",
                "groups_csv": out / "r2_groups.csv",
                "fig_pdf": out / "fig2.pdf", "fig_png": out / "fig2.png"},
        params={"attributes": attributes, "groups": {},
                "stats": {"bootstrap": 200, "confidence": 0.95, "alpha": 0.05, "seed": 0}})
    assert proc.returncode == 0, proc.log + proc.stderr
    assert (out / "r2_groups.csv").exists()  # no group questions asked: an empty table
    table = pl.read_csv(out / "r2.csv", infer_schema_length=None)
    metrics_ = ["r2_parsed", "r2_filled", "spearman", "median_abs_error", "magnitude_share"]
    assert table.columns == ["model", "attribute", "label", "n", "n_unparsable",
                             *(f"{m}{s}" for m in metrics_ for s in ("", "_lo", "_hi"))]
    for m in metrics_:  # each interval holds its estimate (5 test patients: never degenerate)
        assert (table[f"{m}_lo"] <= table[m]).all() and (table[m] <= table[f"{m}_hi"]).all()
    assert (table["r2_parsed_hi"] > table["r2_parsed_lo"]).all()
    assert table.height == len(attributes)  # Fig. 2: the tuned model's, as the paper's
    tuned = table.filter(pl.col("model") == "tuned")
    assert tuned["attribute"].to_list() == list(attributes)
    first = tuned.row(0, named=True)
    assert first["n"] == 19 and first["label"] == "area"  # one missing truth excluded
    assert tuned.row(3, named=True)["n_unparsable"] == 4
    assert (tuned["r2_filled"] > 0).all()
    md = (out / "r2.md").read_text()
    assert "| model | attribute | label | n | n_unparsable | r2_parsed | r2_parsed_lo |" in md
    assert (out / "fig2.pdf").read_bytes()[:4] == b"%PDF"
    assert (out / "fig2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))


def test_r2_untuned_script_strict_and_lenient(tmp_path, attributes):
    preds, manifest, train_txt = _fabricated(tmp_path, attributes)
    out = tmp_path / "untuned"
    proc = run_script(
        "r2_untuned", tmp_path,
        input={"predictions": preds[1], "manifest": manifest, "train": train_txt},
        output={"csv": out / "r2_untuned.csv", "markdown": out / "r2_untuned.md"},
        params={"attributes": attributes})
    assert proc.returncode == 0, proc.log + proc.stderr
    table = pl.read_csv(out / "r2_untuned.csv")
    assert table.height == len(attributes) and (table["model"] == "untuned").all()
    # Sentences: none parses strictly; the lenient parser reads all but attribute 5's.
    assert (table["n_unparsable_strict"] == table["n"]).all()
    lenient = table["n_unparsable_lenient"].to_list()
    assert lenient[5] == table["n"][5] and sum(lenient) == lenient[5]
    assert table["r2_filled_lenient"].is_not_null().all()
    md = (out / "r2_untuned.md").read_text()
    assert "lenient" in md and "n/a" in md
