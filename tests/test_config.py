"""config.yaml and its schema: the paper's run validates, bad configs are stopped by name,
and the one loader (``config.load`` / ``config.check``) fills the schema's defaults as
Snakemake does and refuses what the Snakefile refuses, with the same words."""

import copy
import json
import re

import pytest
import yaml
from snakemake.utils import update_config, validate

from skinground.core import config, sections
from skinground.core.config import ConfigError
from skinground.data.attributes import METADATA_COLUMNS, NUMERIC_COLUMNS, PAPER_ATTRIBUTES

from conftest import REPO

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
DEMO = [REPO / "config.yaml", REPO / "profiles/demo/demo-config.yaml"]


def check(cfg):
    config.check(copy.deepcopy(cfg))


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
    schema = config._schema(SCHEMA)
    assert schema["properties"]["attributes"]["propertyNames"]["enum"] == list(NUMERIC_COLUMNS)
    assert set(PAPER_ATTRIBUTES) <= set(NUMERIC_COLUMNS) <= set(METADATA_COLUMNS)


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
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert named in str(err.value) and "\n" not in str(err.value)


def filled_schema(tmp_path) -> str:
    """The schema file with the code's names filled in (what ``config.check`` applies), as a
    file for Snakemake's own validate."""
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(config._schema(SCHEMA), sort_keys=False))
    return str(path)


def test_the_schemas_names_are_the_codes():
    """The names the code defines (the methods, models, layouts, h_im,a tokens, encoder formats
    and filters) exist once, in the code: the schema file states none of them (its
    ``x-enum-from`` keys name the lists), and the schema the loader applies has the code's."""
    from skinground.core import names
    from skinground.core.outputs import RUN_NAME
    from skinground.core.plan import GROUP_METHODS, PREDICTABLE_MODELS, QWEN_METHODS, QWEN_MODELS
    from skinground.model import batches, loading, prefix

    raw = yaml.safe_load(open(SCHEMA))

    def named(node, key=""):
        """key -> the list name of every ``x-enum-from`` of the schema file; no literal enum
        beside one."""
        found = {}
        if isinstance(node, dict):
            if "x-enum-from" in node:
                assert "enum" not in node, key
                found[key] = node["x-enum-from"]
            for k, v in node.items():
                found |= named(v, f"{key}.{k}" if key else k)
        return found

    assert sorted(named(raw).values()) == sorted(config.ENUMS)
    props = config._schema(SCHEMA)["properties"]
    assert props["run"]["pattern"] == f"^{RUN_NAME.pattern}$"  # skinground query's check
    retrieve = props["retrieve"]["properties"]
    # a method is a Qwen2-VL one or an encoder's name (config.check checks which)
    assert retrieve["methods"]["items"]["type"] == "string"
    encoders = props["model"]["properties"]["encoders"]
    assert set(encoders["propertyNames"]["not"]["enum"]) == {*QWEN_METHODS, *QWEN_MODELS,
                                                             "groups"}
    encoder = encoders["additionalProperties"]["properties"]
    assert encoder["format"]["enum"] == list(loading.ENCODER_FORMATS) == list(names.ENCODER_FORMATS)
    assert (encoder["preprocessing"]["properties"]["resample"]["enum"]
            == list(loading.RESAMPLE) == list(names.RESAMPLE_FILTERS))
    assert retrieve["group_methods"]["items"]["enum"] == [m for m in GROUP_METHODS
                                                          if m != "random"]
    assert props["predict"]["properties"]["models"]["items"]["enum"] == list(PREDICTABLE_MODELS)
    assert props["train"]["properties"]["layout"]["enum"] == list(batches.LAYOUTS)
    assert props["embed"]["properties"]["h_ima_token"]["enum"] == list(prefix.H_IMA_TOKENS)
    assert props["attributes"]["propertyNames"]["enum"] == list(NUMERIC_COLUMNS)
    assert "definitions" not in raw or "metadata_columns" not in raw["definitions"]


def test_a_name_the_code_does_not_define_is_refused(repo_config):
    """The filled-in enums take effect: a layout or h_im,a token the code lacks is refused."""
    bad = copy.deepcopy(repo_config)
    bad["train"]["layout"] = "per_batch"
    with pytest.raises(ConfigError, match="config train.layout: 'per_batch' is not one of"):
        config.check(bad)
    bad = copy.deepcopy(repo_config)
    bad["embed"]["h_ima_token"] = "image_end"
    with pytest.raises(ConfigError, match="config embed.h_ima_token"):
        config.check(bad)


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
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert named in str(err.value)


def test_pixel_params_are_the_budget_that_takes_effect():
    from skinground.core.sections import pixel_params

    assert pixel_params({"image_size": 112, "min_pixels": 1, "max_pixels": 2}) == {
        "image_size": 112}  # the processor ignores min/max then: they must rerun nothing
    assert pixel_params({"image_size": None, "min_pixels": 3136, "max_pixels": 262144}) == {
        "min_pixels": 3136, "max_pixels": 262144}


def test_non_integers_finds_floats_where_the_schema_asks_for_whole_numbers(repo_config):
    from skinground.core.config import deep_merge, non_integers

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
    the Snakefile's config is what config.load's merge gives (one meaning of {})."""
    import functools

    from skinground.core import config

    snakemakes = {}
    for overlay in overlays:
        update_config(snakemakes, copy.deepcopy(overlay))
    expected = functools.reduce(config.deep_merge, overlays, {})
    assert config.empty_sections(snakemakes, overlays) == expected


# ---------------------------------------------------------------- the one loader


def write_yaml(path, value):
    path.write_text(yaml.safe_dump(value, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def test_the_schema_defaults_exactly_the_bookkeeping_keys():
    """A key may be left out exactly when it is bookkeeping (sections.BOOKKEEPING: it changes
    no result): a run's config.yaml, which holds the tracked keys only, then reads back
    whole, and a key that changes results is never filled in behind the user's back."""
    props = yaml.safe_load(open(SCHEMA))["properties"]
    for section, spec in props.items():
        if "properties" not in spec:
            continue
        defaulted = {k for k, sub in spec["properties"].items() if "default" in sub}
        assert defaulted == set(sections.BOOKKEEPING.get(section, ())), section
        assert set(spec["required"]) == set(spec["properties"]) - defaulted, section


def test_the_defaults_are_config_yamls_values(repo_config):
    """config.yaml still states every bookkeeping key, at the schema's default."""
    assert config.check(sections.tracked_config(repo_config)) == repo_config


def test_check_fills_the_defaults_as_snakemakes_validate_does(repo_config, tmp_path):
    """The Snakefile's config is what ``snakemake.utils.validate(config, schema)`` (defaults
    set) made of it before: the same dict, keys in the same order."""
    cfg = sections.tracked_config(repo_config)  # every bookkeeping key left out
    by_snakemake = copy.deepcopy(cfg)
    validate(by_snakemake, filled_schema(tmp_path))
    assert json.dumps(config.check(copy.deepcopy(cfg))) == json.dumps(by_snakemake)
    assert by_snakemake["train"]["save_steps"] == 1000


def test_defaults_nested_in_defaults_are_filled_as_snakemake_fills_them(tmp_path):
    """A default section's own defaults, and defaults under additionalProperties, are set
    (``config.with_defaults``: the recipe Snakemake's validate uses), each a copy."""
    from jsonschema import Draft202012Validator

    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "a": {"type": "object", "default": {}, "properties": {
                "b": {"type": "integer", "default": 1},
                "c": {"type": "object", "default": {"d": 2}, "properties": {
                    "d": {"type": "integer"}, "e": {"type": "string", "default": "x"}}}}},
            "f": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"g": {"type": "array", "default": [1]}}}}}}
    path = write_yaml(tmp_path / "schema.yaml", schema)
    instance = {"f": {"p": {}, "q": {"g": [3]}, "r": {}}}
    by_snakemake = copy.deepcopy(instance)
    validate(by_snakemake, str(path))
    ours = copy.deepcopy(instance)
    config.with_defaults(Draft202012Validator)(schema).validate(ours)
    assert json.dumps(ours) == json.dumps(by_snakemake)
    assert ours == {"f": {"p": {"g": [1]}, "q": {"g": [3]}, "r": {"g": [1]}},
                    "a": {"b": 1, "c": {"d": 2, "e": "x"}}}
    assert ours["f"]["p"]["g"] is not ours["f"]["r"]["g"]


def test_load_fills_the_schemas_defaults(tmp_path, repo_config):
    """A config file that leaves out a key with a default gets it; the demo's merge is
    Snakemake's (with empty_sections) checked as the Snakefile checks it."""
    cfg = copy.deepcopy(repo_config)
    del cfg["train"]["save_steps"], cfg["embed"]["batch_images"], cfg["predict"]["models"]
    loaded = config.load([write_yaml(tmp_path / "config.yaml", cfg)])
    assert loaded["train"]["save_steps"] == 1000 and loaded["embed"]["batch_images"] == 8
    assert loaded["predict"]["models"] == ["tuned"]
    assert loaded == repo_config

    overlays = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in DEMO]
    snakemakes = {}
    for overlay in overlays:
        update_config(snakemakes, copy.deepcopy(overlay))
    config.empty_sections(snakemakes, overlays)
    validate(snakemakes, filled_schema(tmp_path))
    assert json.dumps(config.load(DEMO)) == json.dumps(snakemakes)


def test_load_names_a_file_it_cannot_read(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: No such file"):
        config.load([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [demo\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML \(.*line \d+\)$"):
        config.load([bad])
    write_yaml(bad, ["run", "demo"])
    with pytest.raises(ConfigError, match=r"bad\.yaml: not a map of config sections"):
        config.load([bad])


#: Refused over the demo's config, with the Snakefile's words (tests/test_config_refused.py
#: and bench/bad_inputs.yaml see them from snakemake -n; the schema's own complaints begin
#: with "config <key>:").
REFUSED = [
    ({"data": {"metadata": "/data/slice3d/train-metadata.csv"}},
     "data.metadata (synthetic.enabled): '/data/slice3d/train-metadata.csv' is written by "
     "the demo's generator, so it must lie under results/demo/ (the run's own folder); point "
     "it there, or turn the generator off"),
    ({"data": {"images": "../train-image.hdf5"}}, "data.images (synthetic.enabled): "),
    ({"run": "other"}, "data.metadata (synthetic.enabled): 'results/demo/synthetic/"
                       "train-metadata.csv' is written by the demo's generator, so it must lie "
                       "under results/other/"),
    ({"model": {"base": "/models/Qwen2-VL-7B-Instruct"}}, "model.base (model.build_tiny): "),
    ({"model": {"encoders": {"monet": {"path": "results/other/monet"}}}},
     "model.encoders.monet.path (model.build_tiny): 'results/other/monet' is written"),
    ({"embed": {"shards": 2.0}}, "embed.shards: must be a whole number (not e.g. 2.0)"),
    ({"train": {"lora": {"r": 8.0}}}, "train.lora.r: must be a whole number (not e.g. 2.0)"),
    ({"data": {"zero_is_missing": ["tbp_lv_areaMM"]}},
     "data.zero_is_missing: tbp_lv_areaMM is not one of the configured attributes"),
    ({"model": {"image_size": None, "min_pixels": 9000, "max_pixels": 3136}},
     "model.min_pixels (9000) is above model.max_pixels (3136)"),
    ({"retrieve": {"methods": ["image_only", "dermlip"]}},
     "retrieve.methods: dermlip is neither a Qwen2-VL method (image_text, hierarchical, "
     "image_only, image_untuned) nor an encoder of model.encoders (monet, medsiglip)"),
    ({"retrieve": {"methods": ["image_only", "monet"]}},
     "retrieve.methods lacks image_text: Fig. 3 sets image-only against image + text "
     "retrieval (image_only, image_text); add them"),
    ({"retrieve": {"methods": ["image_text", "monet"], "group_methods": ["image_only"]}},
     "retrieve.group_methods has image_only, which reuses the hits of retrieve.methods' "
     "image_only: add it there too"),
    ({"retrieve": {"group_methods": []}},
     "retrieve.group_methods is empty, but retrieve.groups names size, colour, contrast: "
     "list a method, or write `groups: {}` for no multi-attribute retrieval"),
    ({"retrieve": {"k": 300}}, "retrieve.k must not exceed retrieve.b"),
    ({"figures": {"fig3_attribute": "tbp_lv_nope"}},
     "figures.fig3_attribute: 'tbp_lv_nope' is not one of the configured attributes"),
    ({"retrieve": {"groups": {"size": {"attributes": ["tbp_lv_areaMM2", "tbp_lv_nope"]}}}},
     "retrieve.groups.size: tbp_lv_nope is not one of the configured attributes"),
    ({"stats": {"diagnosis": ["target", "iddx_9"]}},
     "stats.diagnosis: iddx_9 is not a column of SLICE-3D's train-metadata.csv"),
    ({"run": "adv\n"}, "run: 'adv\\n' is not a plain name (letters, digits, _ and -): it "
                       "names the folder results/<run>/"),
    ({"train": {"seed": 4294967296}},
     "config train.seed: 4294967296 is greater than the maximum of 4294967295"),
    ({"stats": {"seed": -1}}, "config stats.seed: -1 is less than the minimum of 0"),
    ({"attributes": {}}, "config attributes: {} should be non-empty"),
    ({"retrieve": {"methods": []}}, "config retrieve.methods: [] should be non-empty"),
    ({"run": ".."}, "config run: '..' does not match"),
    ({"split": {"sede": 3}}, "config split: Additional properties are not allowed ('sede'"),
    ({"tuples": {"W": "five"}}, "config tuples.W: 'five'"),
]


@pytest.mark.parametrize(("change", "message"), REFUSED,
                         ids=[str(i) for i in range(len(REFUSED))])
def test_load_refuses_what_the_snakefile_refuses_in_its_words(tmp_path, change, message):
    """``load`` over the demo's configs and a change raises the one line the Snakefile
    gives (common.smk raises ``check``'s message as Snakemake's WorkflowError)."""
    with pytest.raises(ConfigError) as err:
        config.load([*DEMO, write_yaml(tmp_path / "change.yaml", change)])
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value).replace("'adv\\n'", "")


def test_a_query_reads_its_runs_config_through_the_loader(tmp_path):
    """skinground query reads results/<run>/config.yaml (the run's tracked keys, as rule
    run_config writes them) with ``load``: the keys it leaves out take the schema's
    defaults; a refused one is named, file and key. No model is loaded."""
    from skinground.core import outputs as out
    from skinground.retrieval.query import RUN_FILES, Run

    results = tmp_path / "results" / "demo"
    for rel in RUN_FILES:
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        (results / rel).touch()
    made = config.load(DEMO)
    written = sections.tracked_config(made)
    assert "batch_images" not in written["embed"]
    write_yaml(results / out.RUN_CONFIG, written)
    run = Run(tmp_path, "demo")
    embed = yaml.safe_load(open(SCHEMA))["properties"]["embed"]["properties"]
    assert run.config["embed"]["batch_images"] == embed["batch_images"]["default"] == 8
    assert run.config["train"]["save_steps"] == 1000  # the demo ran with 500: bookkeeping
    assert sections.tracked_config(run.config) == written
    assert run.h_ima_token == made["embed"]["h_ima_token"] == "prompt_end"

    write_yaml(results / out.RUN_CONFIG, {**written, "retrieve": {**written["retrieve"],
                                                                  "k": 10**6}})
    with pytest.raises(ConfigError) as err:
        Run(tmp_path, "demo")
    assert str(err.value) == (f"{results / out.RUN_CONFIG}: retrieve.k must not exceed "
                              "retrieve.b")
    (results / out.RUN_CONFIG).write_text("run: [demo\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^\S+/results/demo/config\.yaml: not valid YAML"):
        Run(tmp_path, "demo")
