"""Training layouts: the per-image (image-once) layout computes the same loss and the same
gradients as the paper's one-sequence-per-tuple layout; its sampler and collator."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from skinground.model import batches, loading, lora
from skinground.model import prefix as P

from conftest import build_train_base, write_train_tuples

N_IMAGES = 5


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_train_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Every image asks all three questions (tiles 40-108 px)."""
    return write_train_tuples(tmp_path_factory.mktemp("data"), N_IMAGES, questions_per_image=3)


def lora_model(base: Path, repo_config: dict, pixels: dict, seed: int = 0):
    """The base with a LoRA adapter whose B matrices are random (a fresh adapter has B = 0,
    which leaves the A gradients 0), and every saved module trainable."""
    model, processor = loading.load_mllm(base, **pixels)
    cfg = copy.deepcopy(repo_config["train"]["lora"])
    cfg.update(r=4, alpha=8, dropout=0.0,
               modules_to_save=["lm_head", "embed_tokens", "visual.merger"])
    peft_model = lora.attach_lora(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    peft_model.train()
    return peft_model, processor


def loss_and_grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def n_answer_tokens(labels: torch.Tensor) -> torch.Tensor:
    """What the Trainer counts as num_items_in_batch: labels[..., 1:] != -100."""
    return (labels[..., 1:] != batches.IGNORE_INDEX).sum()


@pytest.mark.parametrize("passes", [1, 2], ids=["one-suffix-pass", "two-by-length"])
@pytest.mark.parametrize("normalised", [True, False], ids=["num_items", "mean"])
def test_per_image_loss_and_every_gradient_equal_per_tuple(base, data, repo_config, normalised,
                                                           passes, monkeypatch):
    # Native resolution: the tiles give 2 to 16 image tokens, so the prefixes are padded.
    pixels = {"min_pixels": 784, "max_pixels": 12544}
    model, processor = lora_model(base, repo_config, pixels)
    ds = batches.TupleDataset(data["tuples"], data["images"])
    # Interleaved images (the collator groups them) and one image with a single tuple.
    order = [0, 4, 8, 1, 3, 5, 7, 11, 12, 2, 6]
    items = [ds[i] for i in order]
    assert len({it["isic_id"] for it in items}) == 5

    per_tuple = batches.PerTupleCollator(processor)(items)
    per_image = batches.ImageOnceCollator(processor)(items)
    assert len(set(per_image["image_grid_thw"].prod(1).tolist())) > 1
    n_items = n_answer_tokens(per_tuple["labels"])
    assert n_answer_tokens(per_image["labels"]) == n_items
    kwargs = {"num_items_in_batch": n_items} if normalised else {}
    # Suffixes in one pass, or in two by length whenever that pads fewer tokens.
    monkeypatch.setattr(P, "BUCKET_MIN_SAVING", 1.0 if passes == 1 else 0.0)
    assert len(P.length_buckets(per_image["suffix_mask"].sum(1))) == passes

    loss_t, grads_t = loss_and_grads(model, model(**per_tuple, **kwargs).loss)
    loss_i, grads_i = loss_and_grads(model, batches.image_once_loss(model, per_image, **kwargs))

    assert torch.isfinite(loss_t) and loss_t > 0
    assert abs(loss_t.item() - loss_i.item()) < 1e-5
    assert grads_t.keys() == grads_i.keys()
    assert any("lora_A" in n for n in grads_t) and any("visual.blocks" in n for n in grads_t)
    for name, g in grads_t.items():
        assert g.abs().max() > 0, name  # every gradient is exercised
        assert (g - grads_i[name]).abs().max() < 1e-5, name


def test_length_buckets():
    lengths = torch.tensor([9, 30, 8, 31, 9, 10, 8])
    short, long = P.length_buckets(lengths)
    assert short.tolist() == [0, 2, 4, 5, 6] and long.tolist() == [1, 3]
    # 7 x 31 = 217 padded tokens in one pass, 5 x 10 + 2 x 31 = 112 in two
    assert len(P.length_buckets(lengths, min_saving=0.48)) == 2
    assert len(P.length_buckets(lengths, min_saving=0.49)) == 1
    assert [p.tolist() for p in P.length_buckets(torch.tensor([12, 12]))] == [[0, 1]]
    # the best cut: [3, 3, 3 | 9, 10] (3 x 3 + 2 x 10 = 29) beats [.. 9 | 10] (4 x 9 + 10 = 46)
    parts = P.length_buckets(torch.tensor([3, 9, 3, 10, 3]), min_saving=0.0)
    assert [p.tolist() for p in parts] == [[0, 2, 4], [1, 3]]


def test_image_once_loss_sees_the_image(base, data, repo_config):
    """A suffix attends to its own image's prefix: swapping the images changes the loss."""
    model, processor = lora_model(base, repo_config, {"image_size": 56})
    ds = batches.TupleDataset(data["tuples"], data["images"])
    items = [ds[i] for i in range(6)]
    batch = batches.ImageOnceCollator(processor)(items)
    with torch.no_grad():
        loss = batches.image_once_loss(model, batch)
        swapped = dict(batch, suffix_rows=1 - batch["suffix_rows"])
        assert batches.image_once_loss(model, swapped) != loss


def test_image_once_collator_groups_by_image(base, data):
    _, processor = loading.load_mllm(base, image_size=56)
    ds = batches.TupleDataset(data["tuples"], data["images"])
    items = [ds[i] for i in (3, 0, 4, 1)]  # images 1, 0, 1, 0
    batch = batches.ImageOnceCollator(processor)(items)
    assert batch["input_ids"].shape[0] == 2
    assert batch["suffix_rows"].tolist() == [0, 1, 0, 1]
    tok = processor.tokenizer
    for r, item in enumerate(items):
        labelled = batch["labels"][r] != batches.IGNORE_INDEX
        assert tok.decode(batch["suffix_ids"][r][labelled]) == item["answer"] + "<|im_end|>"
        text = tok.decode(batch["suffix_ids"][r][batch["suffix_mask"][r] == 1])
        assert text.startswith(item["question"])
        assert not labelled[batch["suffix_mask"][r] == 0].any()


@pytest.mark.parametrize("pixels", [{"image_size": 56},
                                    {"min_pixels": 28 * 28, "max_pixels": 84 * 84}],
                         ids=["fixed", "mixed-sizes"])
def test_cached_prefixes_build_the_same_batches(base, data, pixels):
    """Batches built from cached single-image prefixes equal encoding each batch (mixed sizes:
    prefixes of different lengths, left-padded); the cache is used from the second epoch."""
    _, processor = loading.load_mllm(base, **pixels)
    ds = batches.TupleDataset(data["tuples"], data["images"])
    plain = batches.collator("per_image", processor)
    cached = batches.collator("per_image", processor, cache_prefixes=True)
    epochs = [[ds[i] for i in order] for order in ([0, 1, 2, 6, 7, 12], [12, 3, 0, 7, 13, 1])]
    lengths = set()
    for items in epochs:
        want, got = plain(items), cached(items)
        assert set(want) == set(got)
        for key in want:
            assert torch.equal(want[key], got[key]), key
        lengths |= set(want["attention_mask"].sum(1).tolist())
    assert len(cached._prefixes) == len({it["isic_id"] for items in epochs for it in items})
    if "min_pixels" in pixels:
        assert len(lengths) > 1  # the prefixes really differ in length


def test_grouped_sampler_is_a_seeded_permutation_of_images():
    ids = ["a", "a", "b", "c", "c", "c", "b", "d"]
    sampler = batches.ImageGroupedSampler(ids, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(len(ids))) and len(sampler) == len(ids)
    # each image's tuples are consecutive
    runs = [ids[i] for k, i in enumerate(first) if k == 0 or ids[first[k - 1]] != ids[i]]
    assert sorted(runs) == ["a", "b", "c", "d"]
    assert list(batches.ImageGroupedSampler(ids, seed=3)) == first  # reproducible
    orders = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        orders.add(tuple(sampler))
    assert len(orders) > 1  # a new order each epoch


def test_collator_for_layout(base):
    _, processor = loading.load_mllm(base, image_size=56)
    assert isinstance(batches.collator("per_image", processor), batches.ImageOnceCollator)
    assert isinstance(batches.collator("per_tuple", processor), batches.PerTupleCollator)
    with pytest.raises(batches.TrainError, match="train.layout must be one of"):
        batches.collator("per_batch", processor)
