"""config.yaml and its schema: the paper's run validates, bad configs are stopped by name."""

import copy
import re

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from skinground.attributes import NUMERIC_COLUMNS, PAPER_ATTRIBUTES

from conftest import REPO

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def check(cfg):
    validate(copy.deepcopy(cfg), SCHEMA)


def test_paper_config_is_valid_and_is_the_paper(repo_config):
    check(repo_config)
    assert list(repo_config["attributes"]) == list(PAPER_ATTRIBUTES)
    assert repo_config["tuples"]["W"] == 5
    assert round(repo_config["split"]["test_fraction"] * 1042) == 240
    assert repo_config["attributes"]["tbp_lv_areaMM2"]["question"] == \
        "What is the area of the lesion in mm²?"
    # Fig. 2 is the fine-tuned model's (the paper's); untuned answers are a named option.
    assert repo_config["predict"]["models"] == ["tuned"]
    # The paper's sampler (shuffled tuples, one sequence each) and h_im,a token (Eq. 3).
    assert repo_config["train"]["layout"] == "per_tuple"
    assert repo_config["embed"]["h_ima_token"] == "question"
    # The paper's split: 240 test patients holding 118,495 of the 401,059 images.
    assert round(repo_config["split"]["test_image_fraction"] * 401_059) == 118_495


def test_demo_config_merged_is_valid(repo_config):
    cfg = copy.deepcopy(repo_config)
    update_config(cfg, yaml.safe_load((REPO / "profiles/demo/demo-config.yaml").read_text()))
    check(cfg)
    assert cfg["synthetic"]["enabled"] and cfg["run"] == "demo"
    assert cfg["data"]["metadata"].startswith("results/demo/")


def test_schema_knows_every_numeric_slice3d_column():
    schema = yaml.safe_load(open(SCHEMA))
    assert schema["properties"]["attributes"]["propertyNames"]["enum"] == list(NUMERIC_COLUMNS)


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c["tuples"].update(W="five"), "five"),
        (lambda c: c["split"].update(test_fraction=1.5), "1.5"),
        (lambda c: c["split"].update(sede=3), "sede"),
        (lambda c: c.update(trian={}), "trian"),
        (lambda c: c["attributes"].update(tbp_lv_areaMM={"question": "?", "label": "x",
                                                         "decimals": 2}), "tbp_lv_areaMM"),
        (lambda c: c["attributes"]["tbp_lv_A"].update(decimals="2"), "'2'"),
        (lambda c: c["data"].pop("images"), "images"),
        (lambda c: c["predict"].update(models=["untuned"]), "tuned"),
        # run is a plain name: ".." would put the run's config.yaml over the workflow's
        (lambda c: c.update(run=".."), "'..'"),
        (lambda c: c.update(run="a/b"), "'a/b'"),
    ],
    ids=["wrong-type", "out-of-range", "unknown-key", "unknown-section", "unknown-attribute",
         "attribute-field-type", "missing-key", "fig2-without-tuned", "run-dotdot",
         "run-path"],
)
def test_bad_config_is_rejected_naming_the_key(repo_config, mutate, named):
    cfg = copy.deepcopy(repo_config)
    mutate(cfg)
    with pytest.raises(WorkflowError) as err:
        check(cfg)
    assert named in str(err.value)


def test_the_schemas_names_are_the_codes():
    """Every enum of the schema that names something the code defines is exactly that set
    (the DAG's shape exists once: plan.py and the modules, the schema follows)."""
    from skinground import layout, prefix
    from skinground.models import ENCODER_FORMATS
    from skinground.outputs import RUN_NAME
    from skinground.plan import GROUP_METHODS, PREDICT_MODELS, QWEN_METHODS, QWEN_MODELS

    props = yaml.safe_load(open(SCHEMA))["properties"]
    assert props["run"]["pattern"] == f"^{RUN_NAME.pattern}$"  # skinground query's check
    retrieve = props["retrieve"]["properties"]
    # a method is a Qwen2-VL one or an encoder's name (common.smk checks which)
    assert retrieve["methods"]["items"]["type"] == "string"
    encoders = props["model"]["properties"]["encoders"]
    # an encoder's name is neither a Qwen2-VL method nor model (nor the group shards' name)
    assert set(encoders["propertyNames"]["not"]["enum"]) == {*QWEN_METHODS, *QWEN_MODELS,
                                                             "groups"}
    encoder = encoders["additionalProperties"]["properties"]
    assert encoder["format"]["enum"] == list(ENCODER_FORMATS)
    # the evaluation adds the random reference itself: it is not a configurable method
    assert retrieve["group_methods"]["items"]["enum"] == [m for m in GROUP_METHODS
                                                          if m != "random"]
    assert props["predict"]["properties"]["models"]["items"]["enum"] == list(PREDICT_MODELS)
    assert sorted(props["train"]["properties"]["layout"]["enum"]) == sorted(layout.LAYOUTS)
    assert (sorted(props["embed"]["properties"]["h_ima_token"]["enum"])
            == sorted(prefix.H_IMA_TOKENS))


MEDSIGLIP = {"path": "/models/medsiglip-448", "format": "siglip", "title": "MedSigLIP",
             "hub": "google/medsiglip-448",
             "preprocessing": {"size": 448, "crop": False, "resample": "bilinear",
                               "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


def test_a_second_encoder_validates(repo_config):
    cfg = copy.deepcopy(repo_config)
    cfg["model"]["encoders"]["medsiglip"] = copy.deepcopy(MEDSIGLIP)
    cfg["retrieve"]["methods"].append("medsiglip")
    check(cfg)


@pytest.mark.parametrize(
    ("name", "change", "named"),
    [
        ("medsiglip", {"format": "open_clip"}, "open_clip"),
        ("medsiglip", {"preprocessing": {**MEDSIGLIP["preprocessing"], "resample": "lanczos"}},
         "lanczos"),
        ("medsiglip", {"preprocessing": {**MEDSIGLIP["preprocessing"], "std": [0.5, 0, 0.5]}},
         "0 is less than or equal to the minimum of 0"),
        ("medsiglip", {"hub": "medsiglip-448"}, "'medsiglip-448' does not match"),
        ("medsiglip", {"path": ""}, "'' should be non-empty"),
        ("medsiglip", {"size": 448}, "('size' was unexpected)"),  # belongs in preprocessing
        ("image_only", {}, "image_only"),  # a Qwen2-VL method's name
        ("untuned", {}, "untuned"),  # a Qwen2-VL model's (embed/untuned/)
        ("med-siglip", {}, "med-siglip"),  # not a plain identifier
    ],
    ids=["format", "resample", "std-zero", "hub", "empty-path", "unknown-key", "qwen-method",
         "qwen-model", "not-identifier"],
)
def test_a_bad_encoder_is_rejected_naming_it(repo_config, name, change, named):
    cfg = copy.deepcopy(repo_config)
    cfg["model"]["encoders"][name] = {**copy.deepcopy(MEDSIGLIP), **change}
    with pytest.raises(WorkflowError) as err:
        check(cfg)
    assert named in str(err.value)


def test_pixel_params_are_the_budget_that_takes_effect():
    from skinground.config import pixel_params

    assert pixel_params({"image_size": 112, "min_pixels": 1, "max_pixels": 2}) == {
        "image_size": 112}  # the processor ignores min/max then: they must rerun nothing
    assert pixel_params({"image_size": None, "min_pixels": 3136, "max_pixels": 262144}) == {
        "min_pixels": 3136, "max_pixels": 262144}


def test_non_integers_finds_floats_where_the_schema_asks_for_whole_numbers(repo_config):
    from skinground.config import deep_merge, non_integers

    schema = yaml.safe_load(open(SCHEMA))
    assert non_integers(repo_config, schema) == []
    bad = deep_merge(repo_config, {"embed": {"shards": 64.0}, "model": {"image_size": 112.0},
                                   "retrieve": {"rrf_k": 60.0}})  # rrf_k is a number
    assert non_integers(bad, schema) == ["model.image_size", "embed.shards"]


def test_the_catalog_file_says_what_the_workflow_does():
    """.snakemake-workflow-catalog.yml: the keys the catalog reads, its flags naming a
    profile that exists, and what it claims (conda environments, a report) true of the
    workflow."""
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    flags = usage["mandatory-flags"]["flags"].split()
    assert flags[0] == "--profile" and (REPO / flags[1] / "config.yaml").exists()
    for key in ("data.metadata", "data.images", "model.base", "model.encoders"):
        assert key in usage["mandatory-flags"]["desc"]
    assert usage["software-stack-deployment"] == {"conda": True, "apptainer": False,
                                                  "apptainer+conda": False}
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    n_rules = len(re.findall(r"^\s*rule \w+:$", rules, flags=re.M))
    assert len(re.findall(r"^\s+conda:$", rules, flags=re.M)) == n_rules > 20
    assert usage["report"] is True
    assert 'report: "workflow/report/workflow.rst"' in (REPO / "Snakefile").read_text()


@pytest.mark.parametrize("overlays", [
    [{"retrieve": {"groups": {"a": {"x": 1}}, "k": 5}}, {"retrieve": {"groups": {}}}],
    [{"retrieve": {"groups": {"a": {"x": 1}, "b": {}}, "k": 5}}, {"retrieve": {"groups": {}}},
     {"retrieve": {"groups": {"c": {"x": 2}}}}],
    [{"a": {"b": {"c": 1}, "d": 2}}, {"a": {}}, {"a": {"b": {}}}, {"a": {"e": 3}}],
    [{"a": {"b": {"c": 1}}}, {"a": {"b": {"d": 2}}}],  # nothing emptied: Snakemake's merge
])
def test_an_empty_map_empties_its_section_as_the_loader_merges(overlays):
    """Snakemake's merge of config files drops an empty map; empty_sections puts it back, so
    the Snakefile's config is what config.load_config's merge gives (one meaning of {})."""
    import functools

    from skinground import config

    snakemakes = {}
    for overlay in overlays:
        update_config(snakemakes, copy.deepcopy(overlay))
    expected = functools.reduce(config.deep_merge, overlays, {})
    assert config.empty_sections(snakemakes, overlays) == expected
