"""Hierarchical retrieval on the fly (forward passes for the b candidates, no stored
per-attribute database) gives the same top-k as the stored path; shards merge back in order.
A finished run's folder is found from anywhere in its project, its questions are named by
their labels, and one of its images is exported as a file."""

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from skinground.core import config, sections
from skinground.core import outputs as out
from skinground.core.errors import InputError
from skinground.data.images import open_images
from skinground.data.shards import ShardError, shard_ids, write_shard
from skinground.demo import tiny
from skinground.demo.lesions import render_tile
from skinground.demo.measure import encode_jpeg
from skinground.model import loading
from skinground.model.embed import extract
from skinground.model.predict import image_once
from skinground.retrieval.index import build_index
from skinground.retrieval.query import (
    RUN_FILES,
    Run,
    export_image,
    find_workdir,
    hierarchical_new_image,
    on_the_fly,
    pick_image,
)
from skinground.retrieval.search import hierarchical, stored
from skinground.retrieval.spaces import Space, merge_space

from conftest import REPO, make_rows, write_slice3d

QUESTIONS = ["What is the area of the lesion in mm²?", "What is the B (LAB) value inside?"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    tiny.build_tiny_qwen2vl(root / "qwen", corpus=QUESTIONS, image_size=56)
    model, processor = loading.load_mllm(root / "qwen", image_size=56)
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{i:07d}" for i in range(40)]
    for i in ids:
        tile = render_tile(rng, int(rng.integers(61, 140)))
        (folder / f"{i}.jpg").write_bytes(encode_jpeg(tile.rgb, 90))
    return model, processor, open_images(folder), ids


def test_on_the_fly_equals_stored(setup):
    model, processor, store, ids = setup
    train, test = ids[:34], ids[34:]
    _, db_im, db_ima = extract(model, processor, store, train, QUESTIONS, batch_images=5,
                               token="question")
    _, q_im, q_ima = extract(model, processor, store, test, QUESTIONS, batch_images=5,
                             token="question")
    index = build_index(db_im.astype(np.float32))
    for a, question in enumerate(QUESTIONS):
        want = hierarchical(index, q_im, q_ima[:, a], b=12, k=5,
                            candidate_ima=stored(db_ima[:, a]))
        got = hierarchical(index, q_im, q_ima[:, a], b=12, k=5, batch_size=2,
                           candidate_ima=on_the_fly(model, processor, store, train, question,
                                                    batch_images=3, token="question"))
        np.testing.assert_array_equal(got.idx, want.idx)
        np.testing.assert_allclose(got.scores, want.scores, atol=2e-3)
        # A new image (not in the database) as skinground query retrieves for it: its h_im
        # and h_im,a from the image-once pass that also answers.
        once = image_once(model, processor, [store.read(test[0])], [question],
                          max_new_tokens=1, token="question")
        one = hierarchical_new_image(model, processor, store, train, index, once.h_im,
                                     once.h_ima[:, 0], question, b=12, k=5, token="question",
                                     batch_images=8)
        np.testing.assert_array_equal(one.idx[0], want.idx[0])


def test_shards_cover_the_split_and_merge_in_order(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in (5, 3, 9, 1, 7, 2, 8)]
    parts = [shard_ids(ids, 3, s) for s in range(3)]
    assert sum(parts, []) == sorted(ids) and all(parts)
    paths = []
    for s, part in enumerate(parts):
        vec = np.array([[int(i[-1]), s] for i in part], dtype=np.float16)
        write_shard(tmp_path / f"shard{s}.npz", part, {"im": vec, "tbp_lv_A": -vec})
        paths.append(tmp_path / f"shard{s}.npz")
    assert merge_space(paths, "tbp_lv_A", tmp_path / "A.npz") == (len(ids), 2)
    merged = Space(tmp_path / "A.npz")
    assert merged.ids == sorted(ids)
    assert merged.rows(0, len(ids))[:, 0].tolist() == [-int(i[-1]) for i in sorted(ids)]
    with pytest.raises(ShardError, match="no embedding space 'tbp_lv_B'"):
        merge_space(paths, "tbp_lv_B", tmp_path / "B.npz")
    assert not (tmp_path / "B.npz").exists()
    with pytest.raises(ValueError, match="shard 3"):
        shard_ids(ids, 3, 3)


# ---------------------------------------------------------------- a finished run's folder


def fake_run(root, *, group_share: float = 0.0, n_images: int = 6) -> dict[str, bytes]:
    """``root/results/demo/`` as a query reads it before any model work: the demo's config
    (``tuples.group_share`` as given), an HDF5 image store of ``n_images`` JPEGs at the
    config's ``data.images`` (relative to ``root``), the split (the last two images test),
    the train space's ids; the adapter and index present, empty. Returns the store's bytes
    by id."""
    results = root / out.fill(out.RUN_FOLDER, run="demo")
    for rel in RUN_FILES:
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        (results / rel).touch()
    written = sections.tracked_config(
        config.load([REPO / "config.yaml", REPO / "profiles/demo/demo-config.yaml"]))
    written["tuples"]["group_share"] = group_share
    assert not Path(written["data"]["images"]).is_absolute()
    store = root / written["data"]["images"]
    rows = make_rows(n_images, 3)
    write_slice3d(store.parent, rows)
    (results / out.RUN_CONFIG).write_text(yaml.safe_dump(written, sort_keys=False),
                                         encoding="utf-8")
    ids = [r["isic_id"] for r in rows]
    for split, part in (("train", ids[:-2]), ("test", ids[-2:])):
        (results / out.fill(out.SPLIT_IDS, split=split)).parent.mkdir(exist_ok=True)
        (results / out.fill(out.SPLIT_IDS, split=split)).write_text("\n".join(part) + "\n")
    space = results / out.fill(out.SPACE, model="tuned", split="train", space=out.IMAGE_SPACE)
    with open(space, "wb") as f:
        np.savez(f, ids=np.array(ids[:-2]), vectors=np.zeros((n_images - 2, 4), np.float16))
    with open_images(store) as images:
        return {i: images.read_bytes(i) for i in ids}


def test_the_runs_folder_is_found_from_anywhere_in_its_project(tmp_path):
    """Like git finds .git: the first folder from here upward holding results/<run>/;
    --workdir names it from elsewhere. Not found: where it looked, and how to point at it."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    fake_run(project)
    elsewhere.mkdir()
    below = project / "results" / "demo" / "split"
    assert find_workdir("demo", start=project) == project
    assert find_workdir("demo", start=below) == project
    assert find_workdir("demo", project) == project
    with pytest.raises(InputError) as err:
        find_workdir("demo", start=elsewhere)
    assert str(err.value) == (
        f"run 'demo': no results/demo/ in {elsewhere} or any folder above it: run skinground "
        "in the project folder that holds results/demo/ (or below it), or give --workdir "
        "DIR, that folder (a run not made yet: run the workflow first)")
    with pytest.raises(InputError, match=r"no results/nope/ in --workdir .*/project: give the "
                                         r"project folder that holds results/nope/"):
        find_workdir("nope", project)
    with pytest.raises(InputError, match=f"this is the run's own folder: --workdir {project}$"):
        find_workdir("demo", project / "results" / "demo")
    with pytest.raises(InputError, match="^--workdir .*/nowhere: no such folder$"):
        find_workdir("demo", tmp_path / "nowhere")


def test_questions_are_named_by_their_labels(tmp_path):
    """Labels are accepted as columns are, and listed with them when a name is unknown; a
    group's question is flagged untrained where the run trained none (group_share 0)."""
    fake_run(tmp_path)
    run = Run(tmp_path, "demo")
    (area,) = run.asked(["area"], [])
    assert (area.name, area.label) == ("tbp_lv_areaMM2", "area") and run.trained(area)
    assert run.asked(["tbp_lv_areaMM2", "area"], []) == [area]
    with pytest.raises(InputError) as err:
        run.asked(["tbp_lv_nope"], [])
    assert str(err.value).startswith("unknown attribute 'tbp_lv_nope'; valid (label or "
                                     "column): area (tbp_lv_areaMM2), minor axis ")
    assert "B inside (tbp_lv_B)" in str(err.value)
    asked = run.asked(["area"], ["size", "colour"])
    assert [(a.name, a.label, run.trained(a)) for a in asked] == [
        ("tbp_lv_areaMM2", "area", True), ("size", "size", False), ("colour", "colour", False)]
    assert run.untrained(asked) == (
        "run 'demo' trained no group questions (tuples.group_share = 0): the model's answer "
        "to size, colour is untrained; the retrieval (h_im,G) is computed all the same")
    assert run.untrained(asked[:1]) is None
    trained = tmp_path / "trained"
    fake_run(trained, group_share=0.25)
    run = Run(trained, "demo")
    assert run.untrained(run.asked([], ["size"])) is None


def test_an_image_of_the_store_is_exported(tmp_path):
    """A .jpg gets the bytes the store holds (a query sees what the run saw), a .png the
    decoded pixels; an unknown id or one that is a path is refused, nothing written."""
    stored = fake_run(tmp_path)
    run = Run(tmp_path, "demo", {out.RUN_CONFIG: "run_config"})
    first = pick_image(run, None)
    assert first == sorted(stored)[-2]  # the first test image
    split, image = export_image(run, first, tmp_path / "a.jpg")
    assert split == "test" and (tmp_path / "a.jpg").read_bytes() == stored[first]
    train = sorted(stored)[0]
    split, image = export_image(run, train, tmp_path / "b.png")
    assert split == "train"
    with Image.open(tmp_path / "b.png") as png:
        assert png.format == "PNG"
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), np.asarray(image))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InputError, match=r"^run 'demo': no image 'ISIC_9999999' in its image "
                                         r"store .*train-image\.hdf5 \(its test images: "):
        export_image(run, "ISIC_9999999", tmp_path / "c.jpg")
    with pytest.raises(InputError, match="not an image id"):
        pick_image(run, "../ISIC_0000001")
    assert sorted(os.listdir(tmp_path)) == before
