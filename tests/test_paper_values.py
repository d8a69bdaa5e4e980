"""config.yaml holds every value the paper states: each expected value below is typed from the
paper's text ("Grounding Multimodal Large Language Models with Quantitative Skin Attributes:
A Retrieval Study"), with its section or figure, never read from the code. The README's
paper-vs-config table points here; docs/reproducing.md lists the choices the paper leaves open.

Nothing is imported from skinground: config.yaml and the workflow profile are read as YAML,
so this test still holds while the library moves.
"""

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: Table 1's 16 attributes, in its order. SLICE-3D's CSV prefixes all but one with tbp_lv_.
TABLE_1 = ("areaMM2", "minorAxisMM", "norm_color", "radial_color_std_max", "deltaB", "deltaL",
           "deltaLB", "stdLExt", "clin_size_long_diam_mm", "perimeterMM", "norm_border",
           "area_perim_ratio", "A", "Aext", "B", "Bext")

#: Section 4.1: the split's images and patients, and the training tuples.
TRAIN_IMAGES, TEST_IMAGES = 282_564, 118_495
TRAIN_PATIENTS, TEST_PATIENTS = 802, 240
TUPLES = 1_412_820


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))


def test_the_16_attributes_of_table_1(config):
    columns = list(config["attributes"])
    names = [c.removeprefix("tbp_lv_") for c in columns]
    assert names == list(TABLE_1), "Table 1: the 16 attributes, in its order"
    assert len(columns) == 16, "Section 4.1: 16 quantitative attributes"


def test_the_area_question_and_answer_of_section_3_1(config):
    area = config["attributes"]["tbp_lv_areaMM2"]
    # Section 3.1: Q(area) = ("What", "is", "the", "area", "of", "the", "lesion", "in", "mm²",
    # "?") and y_area(I) = ("1", ".", "2", "3") for an area of 1.23 mm².
    q_area = ("What", "is", "the", "area", "of", "the", "lesion", "in", "mm²", "?")
    assert area["question"] == " ".join(q_area[:-1]) + q_area[-1], "Section 3.1: Q(area)"
    assert f"{1.23:.{area['decimals']}f}" == "1.23", "Section 3.1: y_area = 1.23 (2 decimals)"


def test_the_patient_split_of_section_4_1(config):
    split = config["split"]
    patients = TRAIN_PATIENTS + TEST_PATIENTS
    images = TRAIN_IMAGES + TEST_IMAGES
    assert images == 401_059, "Section 4.1: SLICE-3D's 401,059 images"
    # config.yaml expresses the counts as shares: of the patients, then of the images.
    assert round(split["test_fraction"] * patients) == TEST_PATIENTS, \
        "Section 4.1: 240 of 802 + 240 patients in the test set"
    assert patients - round(split["test_fraction"] * patients) == TRAIN_PATIENTS, \
        "Section 4.1: 802 train patients"
    assert split["test_image_fraction"] is not None
    assert round(split["test_image_fraction"] * images) == TEST_IMAGES, \
        "Section 4.1: 118,495 test images"
    assert images - round(split["test_image_fraction"] * images) == TRAIN_IMAGES, \
        "Section 4.1: 282,564 train images"


def test_w_attributes_per_train_image(config):
    assert config["tuples"]["W"] == 5, "Sections 3.2 and 4.1: W = 5 attributes per image"
    assert TRAIN_IMAGES * config["tuples"]["W"] == TUPLES, \
        "Section 4.1: |D_tr| = 1,412,820 = 282,564 x 5"
    assert config["tuples"]["group_share"] == 0, "Eq. 1: D_tr holds single-attribute tuples"


def test_the_base_model_of_section_4_1(config):
    # Section 4.1: "the Qwen 2 VL 7B MLLM" (which checkpoint, base or Instruct, is not said:
    # docs/reproducing.md).
    assert Path(config["model"]["base"]).name.startswith("Qwen2-VL-7B"), \
        "Section 4.1: Qwen2-VL 7B"


def test_lora_on_the_vision_encoder_and_the_decoder(config):
    lora = config["train"]["lora"]
    assert lora["r"] == 8, "Section 4.1: a LoRA rank of 8"
    # Section 3.2: "We use LoRA to jointly fine-tune g and F": the vision encoder g and the
    # decoder F, with LoRA alone (nothing trained in full).
    target = re.compile(lora["target_modules"])
    assert target.fullmatch("model.visual.blocks.0.attn.qkv"), "Section 3.2: LoRA on g"
    assert target.fullmatch("model.language_model.layers.0.self_attn.q_proj"), \
        "Section 3.2: LoRA on F"
    assert lora["modules_to_save"] == [], "Section 3.2: LoRA fine-tuning only"


def test_the_training_schedule_of_section_4_1(config):
    train = config["train"]
    assert train["epochs"] == 1, "Section 4.1: 1 epoch"
    assert train["max_steps"] == -1, "Section 4.1: the whole epoch, no step cap"
    assert train["global_batch"] == 16, "Section 4.1: a batch size of 16"
    assert train["per_device_batch"] == 4, "Section 4.1: 4 per machine"
    assert train["lr_scheduler"] == "cosine", "Section 4.1: a cosine learning rate schedule"
    assert train["learning_rate"] == 1e-4, "Section 4.1: starting at 1e-4"
    # Eq. 1 and Section 4.1: a batch is 16 of D_tr's tuples, each (I, Q(a), y_a) its own
    # sequence (how they are ordered is not said: docs/reproducing.md).
    assert train["layout"] == "per_tuple", "Eq. 1: batches of D_tr's tuples"


def test_four_a6000s_train_it(config):
    # Section 4.1: "using 4 NVIDIA A6000 GPUs". The workflow profile places the rule; the
    # site file names the GPU model (the GPU jobs get it: tests/test_slurm.py).
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text(encoding="utf-8"))
    site = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text(encoding="utf-8"))
    train = profile["set-resources"]["train"]
    assert train["gpu"] == 4, "Section 4.1: 4 GPUs"
    assert site["default-resources"]["gpu_model"] == "a6000", "Section 4.1: NVIDIA A6000"
    assert train["gpu"] * config["train"]["per_device_batch"] == config["train"]["global_batch"], \
        "Section 4.1: 4 per machine on 4 GPUs make the batch of 16"


def test_fig_2_is_the_tuned_models_answers_on_every_test_image(config):
    predict = config["predict"]
    assert predict["models"] == ["tuned"], "Fig. 2: R² of our fine-tuned model"
    assert predict["max_test_images"] is None, \
        "Section 4.2: for each I in I_te, we predict all 16 attributes"


def test_h_ima_is_read_at_the_final_question_token(config):
    assert config["embed"]["h_ima_token"] == "question", \
        "Eq. 3 and Section 5: the final row of f([g(I), psi(Q(a))]), the final question token"


def test_retrieval_k_and_b(config):
    retrieve = config["retrieve"]
    assert retrieve["k"] == 5, "Section 4.2 and Figs. 3-4: the top-5 images"
    assert retrieve["b"] == 200, "Section 4.2: hierarchical, using 200 initial images"
    assert retrieve["k"] < retrieve["b"] < TRAIN_IMAGES, "Section 3.3: k << b << |I_tr|"


def test_the_five_methods_of_fig_4_in_order(config):
    # Fig. 4: "(a) Image + Text, (b) Hierarchical (c) Image (d) Image Untuned and the image
    # encoder from one CLIP-like model (e) MONET".
    assert config["retrieve"]["methods"] == [
        "image_text", "hierarchical", "image_only", "image_untuned", "monet"], \
        "Fig. 4: methods (a)-(e), in its order"
    monet = config["model"]["encoders"]["monet"]
    assert list(config["model"]["encoders"]) == ["monet"], "Fig. 4: one image encoder, MONET"
    assert monet["format"] == "clip", "Fig. 4: MONET, a CLIP-like model"
    assert monet["title"] == "MONET", "Fig. 4: (e) MONET"


def test_fig_3_is_image_only_against_image_text_for_area(config):
    assert config["figures"]["fig3_attribute"] == "tbp_lv_areaMM2", \
        "Fig. 3: image-text search specialized to lesion area, using Q(area)"
