"""The measured sections of README.md and docs/*.md, regenerated from ``bench/results/*.json``
and the cost model.

Each generated block sits between ``<!-- generated: NAME ... -->`` and ``<!-- end: NAME -->``
in whichever page holds it (README.md or a page of docs/; each block in exactly one) and is
never edited by hand:

- ``demo_summary``: the demo's means and counts, two seeds (``bench/fidelity.py``);
- ``demo_verdict``: the demo's verdict, two seeds (``bench/fidelity.py``: each run's
  ``verdict/verdict.csv``);
- ``demo_model``: the demo's tiny Qwen2-VL, built as its ``build_models`` rule builds it;
- ``demo``: what the demo shows, per attribute (``bench/fidelity.py``: two seeds, five
  methods, R²);
- ``protocol``: the paper's h_im,a token and sampler on the demo (``bench/protocol.py``);
- ``layout_effect``: the paper's sampler against the image-once layout, from the same runs;
- ``benchmarks``: the speed benchmarks (``bench/*.py``);
- ``groups``: multi-attribute retrieval (``bench/groups.py``);
- ``reliability``: killed runs and their reruns (``bench/kill_resume.py``);
- ``bad_inputs``: damaged inputs through the real commands (``bench/bad_inputs.py``);
- ``demo_stats``: claims, probes, robust R² and diagnosis agreement on the demo
  (``bench/demo_stats.py``);
- ``cost``: ``python -m skinground.cost config.yaml`` (with ``resources/measured/gpu.json``
  when it holds a GPU measurement);
- ``disk``: the disk model (``skinground.cost.disk``): every output of the paper's run, the
  total, and the pilot's total;
- ``pilot``: the same for the pilot (``profiles/pilot``) on one GPU, at the image counts its
  patient sample aims at;
- ``scale``, ``stats_scale``: paper scale rehearsed (``bench/scale.py``,
  ``bench/stats_scale.py``).

    python bench/readme.py            # rewrite the blocks, each in its page
    python bench/readme.py --check    # exit 1 if a page is not what the results give
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
#: The columns of the demo table: the Qwen2-VL methods by letter (bench/demo_targets.py's keys);
#: "e" is MONET in records made before the encoders were a list (now keyed by name).
LETTERS = {"a": "(a) image+text", "b": "(b) hierarchical", "c": "(c) image",
           "d": "(d) untuned", "e": "(e) MONET"}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def missing(name: str, command: str) -> str:
    return f"*Not measured yet: `{command}` writes `bench/results/{name}.json`.*\n"


# --------------------------------------------------------------------------- blocks


def demo_model_block() -> str:
    """The demo model's size: built from the demo config, as ``build_models`` builds it."""
    import tempfile

    from transformers import Qwen2VLForConditionalGeneration

    from skinground.core.config import load as load_config
    from skinground.demo import tiny

    config = load_config([REPO / "config.yaml", REPO / "profiles/demo/demo-config.yaml"])
    with tempfile.TemporaryDirectory() as tmp:
        tiny.build_demo_models(config["model"]["tiny"], config["attributes"],
                               base=Path(tmp) / "qwen", encoders={})  # the Qwen2-VL only
        model = Qwen2VLForConditionalGeneration.from_pretrained(Path(tmp) / "qwen")
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    dims = config["model"]["tiny"]
    return (f"The demo's model is a tiny Qwen2-VL of {total:,} parameters "
            f"({total - vision:,} in the decoder of width {dims['text_hidden']}, {vision:,} "
            f"in the vision encoder of width {dims['vision_embed']}; LoRA and the layers "
            "trained in full come on top), built locally by its `build_models` rule.\n")


def demo_methods(first: dict) -> dict[str, str]:
    """The demo table's methods, key -> column title: (a)-(d), then each image encoder of the
    runs ((e), (e2), ... as the runs recorded them), in their order."""
    titles = first.get("titles", {})
    def letter(k: str) -> tuple[int, str]:  # "(e2) MedSigLIP" -> (2, "e2"): (e), (e2), ...
        mark = titles.get(k, k).partition(")")[0].lstrip("(")
        return len(mark), mark

    encoders = sorted((k for k in first["medians"] if k not in "abcd"), key=letter)
    return {k: LETTERS.get(k) or titles.get(k, k) for k in [*"abcd", *encoders]}


def demo_summary_block() -> str:
    """The front page's demo table: per seed, each method's mean over the attributes of its
    median percentile, and the counts the targets are set on (``demo`` has them per
    attribute)."""
    fid = load("fidelity")
    if fid is None:
        return missing("fidelity", "python bench/fidelity.py")
    runs = fid["runs"]
    titles = demo_methods(runs[0])
    n = len(runs[0]["labels"])
    t = fid["targets"]
    lines = [f"Each method's mean over the {n} attributes of the median percentile of the "
             "retrieved images' attribute difference (random ≈ 50, lower is better; top 5 per "
             f"test query), and on how many of the {n} attributes each count holds (R²: the "
             "tuned model's answers):", "",
             "| seed | " + " | ".join(titles.values()) + " | " + " | ".join(COUNT_TITLES)
             + " |", "|---|" + "---:|" * (len(titles) + len(COUNTS)),
             "| target |" + " |" * len(titles) + " "
             + " | ".join(f"≥ {t[k]}" for k in COUNTS) + " |"]
    for r in runs:
        means = [sum(r["medians"][k].values()) / len(r["medians"][k]) for k in titles]
        lines.append(f"| {r['seed']} | " + " | ".join(f"{m:.1f}" for m in means) + " | "
                     + " | ".join(f"{r['counts'][k]}/{n}" for k in COUNTS) + " |")
    lines += ["", f"Targets {'met on every seed' if fid['met'] else 'NOT all met'} "
              "(`python bench/fidelity.py`; 2 CPU cores)."]
    return "\n".join(lines) + "\n"


#: The verdict's files, by the name its ``file`` column gives them.
VERDICT_FILES = {"paper": "the paper's values and claims (`resources/expected/paper.yaml`)",
                 "demo": "the demo's targets (`resources/expected/demo.yaml`)"}


def demo_verdict_block() -> str:
    """The demo's verdict, as each seed's run wrote it (``verdict/verdict.csv``'s own rows,
    recorded by ``bench/fidelity.py``): per file the verdicts counted, then per expectation
    what was expected, measured and judged, seed by seed."""
    fid = load("fidelity")
    if fid is None or any("verdict" not in r for r in fid["runs"]):
        return missing("fidelity", "python bench/fidelity.py")
    runs = fid["runs"]
    seeds = " · ".join(f"seed {r['seed']}" for r in runs)
    lines = [f"The demo's verdict (`skinground verdict --run demo`; {seeds}), against "
             "the paper and its own targets:", ""]
    for name, title in VERDICT_FILES.items():
        per_seed = []
        for r in runs:
            verdicts = [row["verdict"] for row in r["verdict"] if row["file"] == name]
            counts = [f"{verdicts.count(v)} {v}" for v in ("held", "not held",
                                                          "not measurable here")
                      if verdicts.count(v)]
            per_seed.append(", ".join(counts))
        lines.append(f"- {title}: {' · '.join(per_seed)}.")
    lines += ["", "| expectation | source | expected | measured | verdict |",
              "|---|---|---|---|---|"]
    for i, row in enumerate(runs[0]["verdict"]):
        rows = [r["verdict"][i] for r in runs]
        measured = " · ".join(x["measured"] for x in rows)
        verdict = " · ".join(x["verdict"] for x in rows)
        lines.append(f"| {row['expectation']} | {row['source']} | {row['expected']} | "
                     f"{measured} | {verdict} |")
    lines += ["", "The counts are SLICE-3D's, not measurable on synthetic data; the tiny "
              "random models are not expected to reach the paper's R² or every ordering, "
              "only the demo's targets. What each row tests: [docs/verdict.md](docs/verdict.md)."]
    return "\n".join(lines) + "\n"


def demo_block() -> str:
    fid = load("fidelity")
    if fid is None:
        return missing("fidelity", "python bench/fidelity.py")
    runs = fid["runs"]
    first = runs[0]
    titles = demo_methods(first)
    keys = list(titles)
    seeds = " · ".join(f"seed {r['seed']}" for r in runs)
    lines = [f"Median percentile of the retrieved images' attribute difference (random ≈ 50, "
             f"lower is better; top 5 per test query) and the tuned model's test R² "
             f"(unparsable answers at the train mean), {seeds}:", "",
             "| attribute | " + " | ".join(titles.values()) + " | R² tuned |",
             "|---|" + "---:|" * (len(keys) + 1)]
    for attr, label in first["labels"].items():
        cells = [" · ".join(f"{r['medians'][k][attr]:.1f}" for r in runs)
                 for k in keys]
        cells.append(" · ".join(f"{r['r2'][attr]:.2f}" for r in runs))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    means = [" · ".join(f"{sum(r['medians'][k].values()) / len(r['medians'][k]):.1f}"
                        for r in runs) for k in keys]
    lines.append("| **mean** | " + " | ".join(f"**{m}**" for m in means) + " | |")
    t = fid["targets"]
    lines += ["", "| seed | (c) beats (d) | (a) beats (c) | R² > 0 | R² ≥ 0.5 | training | "
              "whole DAG |", "|---|---:|---:|---:|---:|---:|---:|",
              f"| target | ≥ {t['c_beats_d']} | ≥ {t['a_beats_c']} | ≥ {t['r2_positive']} | "
              f"≥ {t['r2_half']} | | |"]
    for r in runs:
        c, tr = r["counts"], r["train"]
        lines.append(f"| {r['seed']} | {c['c_beats_d']}/16 | {c['a_beats_c']}/16 | "
                     f"{c['r2_positive']}/16 | {c['r2_half']}/16 | {tr['steps']} steps, "
                     f"{tr['seconds']:.0f} s | {r['wall_seconds']:.0f} s |")
    lines += ["", f"Targets {'met on every seed' if fid['met'] else 'NOT all met'} "
              "(`python bench/fidelity.py`, or `bench/protocol.py`'s plain runs; 2 CPU cores, "
              "times as measured, the machine possibly shared: the whole DAG alone is "
              "`bench/demo_dag.py`'s, in [the benchmarks](cost-and-scale.md#benchmarks))."]
    return "\n".join(lines) + "\n"


COUNTS = ("c_beats_d", "a_beats_c", "r2_positive", "r2_half")
COUNT_TITLES = ("(c) beats (d)", "(a) beats (c)", "R² > 0", "R² ≥ 0.5")
VARIANT_TITLES = {"demo": ("prompt_end", "per_image"), "question": ("**question**", "per_image"),
                  "per_tuple": ("prompt_end", "**per_tuple**")}


#: The paper's choices that bench/protocol.py measures on the demo, as its verdicts name them.
PROTOCOL_VARIANTS = {"question": "The paper's h_im,a token (the question's last token)",
                     "per_tuple": "The paper's sampler (shuffled tuples, at equal tuples seen)"}


def protocol_comparison(res: dict) -> tuple[str | None, dict[str, str]]:
    """The seed-to-seed spread of the plain demo's counts, and per measured variant its
    counts against the demo's, seed by seed, with whether they move beyond that spread
    (``None, {}`` with fewer than two plain seeds)."""
    by = {(r["variant"], r["seed"]): r for r in res["runs"]}
    seeds = sorted({r["seed"] for r in res["runs"]})
    plain = [by[("demo", s)] for s in seeds if ("demo", s) in by]
    spread_of = "these runs"
    if len(plain) < 2 and load("fidelity"):  # the plain demo's seeds, from fidelity.json
        plain = load("fidelity")["runs"]
        spread_of = (f"`bench/results/fidelity.json`, seeds "
                     f"{' and '.join(str(r['seed']) for r in plain)}")
    if len(plain) < 2:
        return None, {}
    spread = {k: max(r["counts"][k] for r in plain) - min(r["counts"][k] for r in plain)
              for k in COUNTS}
    spread_line = (f"- Seed-to-seed spread of the demo's own counts ({spread_of}): "
                   + ", ".join(f"{t} {spread[k]}" for k, t in zip(COUNTS, COUNT_TITLES,
                                                                 strict=True)) + ".")
    verdicts = {}
    for variant, what in PROTOCOL_VARIANTS.items():
        diffs = {k: [by[(variant, s)]["counts"][k] - by[("demo", s)]["counts"][k]
                     for s in seeds if (variant, s) in by and ("demo", s) in by]
                 for k in COUNTS}
        if not all(diffs.values()):
            continue
        beyond = [t for k, t in zip(COUNTS, COUNT_TITLES, strict=True)
                  if max(abs(d) for d in diffs[k]) > max(spread[k], 1)]
        change = ", ".join(f"{t} {'/'.join(f'{d:+d}' for d in diffs[k])}"
                           for k, t in zip(COUNTS, COUNT_TITLES, strict=True))
        verdict = ("within the seed-to-seed spread" if not beyond
                   else f"beyond the seed-to-seed spread for {', '.join(beyond)}")
        verdicts[variant] = f"- {what} against the demo's, per seed: {change}: {verdict}."
    return spread_line, verdicts


def protocol_block() -> str:
    """The demo's counts under the paper's h_im,a token and sampler, beside the demo's own,
    and whether each departure moves them beyond the seed-to-seed spread."""
    res = load("protocol")
    if res is None:
        return missing("protocol", "python bench/protocol.py")
    runs = res["runs"]
    lines = ["| h_im,a token | train.layout | seed | " + " | ".join(COUNT_TITLES)
             + " | mean R² | training |", "|---|---|---:|" + "---:|" * 6]
    by = {(r["variant"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    for variant, (token, layout) in VARIANT_TITLES.items():
        for seed in seeds:
            r = by.get((variant, seed))
            if r is None:
                continue
            c, tr = r["counts"], r["train"]
            mean_r2 = sum(r["r2"].values()) / len(r["r2"])
            lines.append(f"| {token} | {layout} | {seed} | "
                         + " | ".join(f"{c[k]}/16" for k in COUNTS)
                         + f" | {mean_r2:.2f} | {tr['steps']} steps, {tr['seconds']:.0f} s |")
    spread_line, verdicts = protocol_comparison(res)
    if spread_line:
        lines += ["", spread_line, *verdicts.values()]
    if len(seeds) < 2:
        lines += ["", f"The variants measured on seed {', '.join(map(str, seeds))} only so far; "
                  "a second seed: `python bench/protocol.py --seeds 1 --out B.json "
                  "--fidelity-out -`, then `--merge bench/results/protocol.json B.json`."]
    lines += ["", "`python bench/protocol.py` (2 CPU cores; each variant in the same folder as "
              "the plain demo run, so only what the change touches reruns)."]
    return "\n".join(lines) + "\n"


def layout_effect_block() -> str:
    """The image-once training layout's effect on the demo: the paper's shuffled
    one-sequence-per-tuple batches against it, at the same steps and tuples per step
    (``bench/protocol.py``'s per_tuple runs)."""
    res = load("protocol")
    if res is None:
        return missing("protocol", "python bench/protocol.py")
    spread_line, verdicts = protocol_comparison(res)
    if "per_tuple" not in verdicts:
        return ("*Not measured yet: `python bench/protocol.py` runs the paper's sampler on the "
                "demo's seeds beside the plain demo.*\n")
    return f"{spread_line}\n{verdicts['per_tuple']}\n"


def benchmarks_block() -> str:
    rows = []
    tl = load("train_layout")
    if tl:
        p, t = tl["per_image"]["tuples_per_s"], tl["per_tuple"]["tuples_per_s"]
        rows.append(f"| training, image-once vs one sequence per tuple, demo model, "
                    f"{tl['per_device_batch_tuples']} tuples/step (`train_layout.py`) | "
                    f"{p:,.0f} vs {t:,.0f} tuples/s: **{tl['ratio']:.1f}×**; first-batch loss "
                    f"diff {tl['agreement_first_batch']['loss_abs_diff']:.0e} | ≥ 4× |")
    for name, what in (("predict_tuned", "the demo run's tuned model, its test images "
                                         "(`predict.py --run results/demo`)"),
                       ("predict", "a random tiny model, every row decoding all "
                                   "`max_new_tokens` (`predict.py`)")):
        pr = load(name)
        if pr:
            rows.append(f"| greedy answers, image-once vs one sequence per (image, question), "
                        f"{pr['images']} images × {pr['questions']} questions, {what} | "
                        f"{pr['seconds']['image_once']:.2f} s vs "
                        f"{pr['seconds']['per_question']:.2f} s: **{pr['ratio']:.1f}×**, "
                        f"identical answers: {pr['identical']} | ≥ 5× |")
    ps = load("prefix_sharing")
    if ps:
        rows.append(f"| embeddings, prefix-shared vs naive, {ps['images']} tiles × "
                    f"{ps['questions']} questions (`prefix_sharing.py`) | "
                    f"**{ps['speedup']:.1f}×**, max diff {ps['max_abs_diff']['h_ima']:.0e} | "
                    "≥ 10× |")
    pc = load("percentile")
    if pc:
        rows.append(f"| percentile ranks, binary search vs brute force, N = {pc['n_train']:,} "
                    f"(`percentile.py`) | **{pc['ratio']:,.0f}×**, identical: "
                    f"{pc['identical']} | ≥ 1000× |")
    sc = load("stats_scale")
    if sc:
        ev = sc["evaluate"]
        rows.append(f"| bootstrap medians, bins of sorted items vs counting every item, "
                    f"{ev['replicates']} replicates of one paper-size cell "
                    f"({ev['median_cell_items']:,} values, {ev['test_patients']} patients; "
                    f"`stats_scale.py`) | {ev['median_seconds']['binned']:.2f} s vs "
                    f"{ev['median_seconds']['plain']:.1f} s: **{ev['median_speedup']:.0f}×**, "
                    f"identical: {ev['median_identical']} | identical |")
    ft = load("faiss_topk")
    if ft:
        rows.append(f"| FAISS IndexFlatIP vs numpy top-k, {ft['n']:,} × {ft['d']} "
                    f"(`faiss_topk.py`) | {ft['ratio']:.2f}× on CPU, identical ids: "
                    f"{ft['identical_ids']} | identical ids |")
    dd = load("demo_dag")
    if dd:
        rows.append(f"| whole demo DAG from a clean `results/`, 2 cores (`demo_dag.py`) | "
                    f"**{dd['wall_seconds']:.0f} s**, {dd['jobs']} jobs | ≤ 600 s |")
    gpu = load("gpu")
    gpu_line = ("*`bench/results/gpu.json`: not measured on a GPU yet (`bash "
                "bench/gpu_check.sh` on one).*" if gpu is None or gpu.get("tiny") else
                f"GPU check on {gpu.get('device', {}).get('name')}: see `bench/results/gpu.json`.")
    return "\n".join(["| what | measured | goal |", "|---|---|---|", *rows, "",
                      "Run one with `python bench/<name>.py`.", gpu_line]) + "\n"


GROUP_METHODS = {"composed": "(f) composed", "composed_hierarchical": "(f') hier. composed",
                 "image_only": "(c) image", "fused": "(g) fused", "rrf": "(h) RRF",
                 "random": "random"}


def groups_block() -> str:
    g = load("groups")
    if g is None:
        return missing("groups", "python bench/groups.py")
    runs = g["runs"]
    shares = sorted({r["group_share"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})

    def median(run, group, method, criterion):
        for row in run["groups"]:
            if (row["group"], row["method"], row["criterion"]) == (group, method, criterion):
                return row["median"]
        return None

    groups = list(dict.fromkeys(row["group"] for row in runs[0]["groups"]))
    lines = [f"Median of the group criterion (lower is better; random ≈ the last column), "
             f"seeds {' · '.join(map(str, seeds))}, for `tuples.group_share` "
             f"{' and '.join(f'{s:g}' for s in shares)}:", "",
             "| group | criterion | share | " + " | ".join(GROUP_METHODS.values()) + " |",
             "|---|---|---:|" + "---:|" * len(GROUP_METHODS)]
    wins = {}
    for group in groups:
        for criterion in ("max", "mean"):
            for share in shares:
                sel = [r for r in runs if r["group_share"] == share]
                cells = []
                for m in GROUP_METHODS:
                    vals = [median(r, group, m, criterion) for r in sel]
                    cells.append(" · ".join("-" if v is None else f"{v:.1f}" for v in vals))
                lines.append(f"| {group} | {criterion} | {share:g} | " + " | ".join(cells) + " |")
                if criterion == "max":
                    best = {}
                    for m in GROUP_METHODS:
                        if m == "random":
                            continue
                        vals = [median(r, group, m, "max") for r in sel]
                        if all(v is not None for v in vals):
                            best[m] = sum(vals) / len(vals)
                    wins[(group, share)] = min(best, key=best.get)
    verdict = "; ".join(f"{group} (share {share:g}): {GROUP_METHODS[m]}"
                        for (group, share), m in wins.items())
    lines += ["", f"Best mean-over-seeds median of the max criterion per group: {verdict}."]
    return "\n".join(lines) + "\n"


def reliability_block() -> str:
    k = load("kill_resume")
    if k is None:
        return missing("kill_resume", "python bench/kill_resume.py")
    hit = sorted({r for run in k["kills"] for r in run["rules_hit"]})
    unlocked = sum(run["unlocked"] for run in k["kills"])
    small = k.get("small")
    size = (f"small demo (`--small`: {small['synthetic']['images']} images, "
            f"{small['train']['max_steps']} steps)" if small else "demo")
    return (f"**{k['identical']} of {k['of']}** {size} runs killed with SIGKILL at random "
            f"moments (rules hit: {', '.join(hit)}) and rerun as a user would "
            f"({unlocked} needed `--unlock` first) ended with outputs byte-identical to an "
            f"uninterrupted run's ({k['files_compared']} files; not compared: logs, "
            "benchmarks, timing summaries). `python bench/kill_resume.py"
            f"{' --small' if small else ''} --kills {k['of']}`.\n")


def bad_inputs_block() -> str:
    res = load("bad_inputs")
    if res is None:
        return missing("bad_inputs", "python bench/bad_inputs.py")
    kinds: dict[str, list[dict]] = {}
    for case in res["cases"]:
        kinds.setdefault(case["kind"], []).append(case)
    lines = [f"**{res['refused_cleanly']} of {res['total']}** damaged inputs refused cleanly "
             f"(exit non-zero, one line naming the culprit, no traceback), "
             f"**{res['files_changed']}** files changed under `results/` by them all "
             "(`python bench/bad_inputs.py`, through the `manifest` rule, a dry run of the "
             "workflow, or `skinground query` on a finished small demo run):", "",
             "| input | cases | refused cleanly | an example message |", "|---|---:|---:|---|"]
    for kind, cases in kinds.items():
        example = next((c["message"] for c in cases if c["ok"] and c["message"]), "")
        example = example.replace("|", "\\|")
        if len(example) > 140:
            example = example[:137] + "..."
        lines.append(f"| {kind} | {len(cases)} | {sum(c['ok'] for c in cases)} | "
                     f"`{example}` |")
    bad = [c["name"] for c in res["cases"] if not c["ok"]]
    if bad:
        lines += ["", f"Not refused cleanly: {', '.join(bad)}."]
    return "\n".join(lines) + "\n"


def cost_block() -> str:
    sys.path.insert(0, str(REPO / "workflow"))
    from skinground.core import outputs
    from skinground.core.config import load as load_config
    from skinground.cost import calibration, estimate, report

    # what the workflow's cost rule reads: the measurements promoted to resources/measured/
    config = load_config([REPO / "config.yaml"])
    a = calibration.apply_file(estimate.Assumptions(), REPO / outputs.GPU_MEASUREMENT,
                               required=False)
    a = calibration.apply_tokens(a, REPO / outputs.TOKEN_MEASUREMENT, required=False)
    result = estimate.estimate_with_profiles(config, a,
                                         REPO / "profiles" / "default" / "config.yaml",
                                         REPO / "profiles" / "slurm" / "config.yaml")
    return ("Generated by `python -m skinground.cost config.yaml`:\n\n"
            + report.format_table(result) + "\n")


def disk_block() -> str:
    """The disk of the paper's run, output by output, and the pilot's total (each at the
    images its config's split aims at: ``runtime.config_images``)."""
    sys.path.insert(0, str(REPO / "workflow"))
    from skinground.core.config import load as load_config
    from skinground.cost import disk, report, runtime

    config = load_config([REPO / "config.yaml"])
    paper = disk.table(config, *runtime.config_images(config))
    shards = [r for r in paper["items"] if r["rule"] in ("embed_shard", "embed_groups")]
    kept = sum(r["gb"] for r in shards)
    parts = " + ".join(f"{r['gb']:,.1f}" for r in shards)
    answers = next(r for r in paper["items"] if r["rule"] == "predict_shard")
    lines = ["Generated by `python -m skinground.cost config.yaml` (its disk table):", "",
             report.format_disk(paper), "",
             f"The embedding shards ({parts} GB, {kept / paper['total_gb']:.0%} of the total) "
             "are kept, not `temp()` (below); deleted by hand once the run is final, they "
             f"leave {paper['total_gb'] - kept:,.1f} GB. The prediction shards hold "
             f"{answers['gb'] * 1e3:,.0f} MB."]
    overlay = REPO / PILOT[1]
    if overlay.is_file():
        pilot_config = load_config([REPO / c for c in PILOT])
        train, test = runtime.config_images(pilot_config)
        pilot = disk.table(pilot_config, train, test)
        lines += ["", f"The pilot (`{' '.join(PILOT)}`, {train:,} x {test:,} images): "
                      f"**{pilot['total_gb']:,.1f} GB**."]
    return "\n".join(lines) + "\n"


#: The pilot: config.yaml and its overlay (profiles/pilot/config.yaml runs it on one GPU).
PILOT = ("config.yaml", "profiles/pilot/pilot-config.yaml")


def pilot_block() -> str:
    """The pilot's GPU-hours by the cost model, on one GPU, at the train and test images its
    sample of the patients aims at (``cost.runtime.config_images``)."""
    sys.path.insert(0, str(REPO / "workflow"))
    from skinground.core import outputs
    from skinground.core.config import load as load_config
    from skinground.cost import calibration, estimate, flops
    from skinground.cost.runtime import config_images

    config = load_config([REPO / c for c in PILOT])
    paper = load_config([REPO / "config.yaml"])
    slice3d = flops.PAPER_TRAIN_IMAGES + flops.PAPER_TEST_IMAGES
    train, test = config_images(config)  # the images its sample of the patients aims at
    a = estimate.Assumptions(train_images=train, test_images=test, gpus=1)
    a = calibration.apply_file(a, REPO / outputs.GPU_MEASUREMENT, required=False)
    a = calibration.apply_tokens(a, REPO / outputs.TOKEN_MEASUREMENT, required=False)
    profiles = (REPO / "profiles" / "default" / "config.yaml",
                REPO / "profiles" / "slurm" / "config.yaml")
    result = estimate.estimate_with_profiles(config, a, *profiles)
    full = estimate.estimate_with_profiles(paper, estimate.Assumptions(
        **{**vars(a), "train_images": flops.PAPER_TRAIN_IMAGES,
           "test_images": flops.PAPER_TEST_IMAGES}), *profiles)
    by_rule: dict[str, float] = {}
    for row in result["stages"]:
        if row["in_dag"]:
            by_rule[row["rule"]] = by_rule.get(row["rule"], 0.0) + row["gpu_hours"]
    basis = "measured" if a.measured else "assumed"
    share = config["split"]["patient_fraction"]
    return (f"`python -m skinground.cost {' '.join(PILOT)} --train-images {train} "
            f"--test-images {test} --gpus 1`: the images a {share:.0%} "
            f"sample of the patients aims at ({train + test:,} of SLICE-3D's {slice3d:,}, "
            f"{test:,} of them test), {result['total_jobs']} jobs, "
            f"**{result['total']['gpu_hours']:.1f} GPU-hours** on one A6000 at the {basis} "
            f"MFUs ({', '.join(f'{r} {h:.2f}' for r, h in by_rule.items())}), against "
            f"{full['total']['gpu_hours']:.1f} for the full run, each model job's loading of its "
            "weights included. Not in the estimate: the queue's waits.\n")


def _mib(x: float) -> str:
    return f"{x / 1024:.2f} GB" if x >= 1024 else f"{x:.0f} MB"


def scale_block() -> str:
    sc = load("scale")
    if sc is None:
        return missing("scale", "python bench/scale.py")
    sys.path.insert(0, str(REPO / "workflow"))
    from skinground.core.config import load_profile
    from skinground.cost import memory

    profile = load_profile(REPO / "profiles" / "default" / "config.yaml")
    site = load_profile(REPO / "profiles" / "slurm" / "config.yaml")
    sizes = [r["train_images"] for r in sc["retrieval"]]
    tests = [r["test_images"] for r in sc["retrieval"]]
    lines = [f"`{sc['command'].strip()}` ({sc['seconds'] / 60:.0f} min on "
             f"{sc['machine']['cpu_count']} cores). Retrieval half: "
             f"{', '.join(f'{n:,} x {q:,}' for n, q in zip(sizes, tests, strict=True))} "
             f"(train x test images, the paper's ratio), d = {sc['width']:,}, "
             f"{len(sc['attributes'])} attributes and one group of them, from random "
             "embedding shards in the DAG's format through the real rules. Data half: "
             f"{', '.join(format(r['images'], ',') for r in sc['data'])} images of a "
             "SLICE-3D-shaped "
             "cohort (all 16 attributes).", "",
             "Each job's exact peak (its address space's high-water mark, from its log); the "
             "largest job of each rule (retrieval: per method) at each size; the memory "
             "model (`skinground.cost.memory`) at the largest measured size and at the paper's "
             "282,564 x 118,495 (16 attributes), the straight line through the measurements "
             "extrapolated there, and the profile's `mem_mb`:", "",
             "| rule | measured peaks | model at the largest | paper scale: model · fit "
             "| mem_mb | slowest job (s) |", "|---|---|---:|---:|---:|---:|"]
    for rule, e in sc["rules"].items():
        mem = memory.profile_mem_mb(profile, site, rule.split(":")[0])
        fit = e["fit_mib"]["paper_mib"]
        paper = e["model_paper_mib"]
        lines.append(f"| {rule} | {' · '.join(_mib(p) for p in e['peak_mib'])} | "
                     f"{_mib(e['model_mib'][-1])} | {_mib(paper)} · {_mib(fit)} | "
                     f"{mem:,.0f} | {' · '.join(f'{t:.0f}' for t in e['seconds'])} |")
    lines += [f"\nNote: {n}" for n in sc.get("notes", [])]
    data = sc["data"][-1]
    split = data["split"]
    lines += ["", f"At {data['images']:,} images the split gave {split['test']['patients']} test "
              f"patients holding {split['test']['images']:,} images (the paper: 240 and "
              f"118,495) and {data['tuples']:,} training tuples (the paper: 1,412,820); the "
              f"data half took {data['wall_seconds']:.0f} s."]
    fp16 = load("faiss_fp16")
    if fp16:
        rand = fp16["cases"]["random + shared direction d=3584"]
        demo = sorted(1 - c["same_top_k_set"] for n, c in fp16["cases"].items()
                      if n.startswith("demo"))
        lines += ["", f"FAISS index precision: float32 on the GPU too. A float16 index "
                  f"(`bench/faiss_fp16.py`) would change the top-5 of "
                  f"{1 - rand['same_top_k_set']:.1%} of the queries on random 3,584-wide "
                  f"spaces with a shared direction, and of a median {demo[len(demo) // 2]:.0%} "
                  f"(range {demo[0]:.0%}-{demo[-1]:.0%}) on the demo's {len(demo)} stored "
                  "spaces, whose near-ties float16 reorders; one float32 space of the "
                  "paper's run (4.05 GB) fits the A6000's 48 GB."]
    return "\n".join(lines) + "\n"


def _ci_of(row: dict, name: str, digits: int = 2) -> str:
    return _ci(row[name], row[f"{name}_lo"], row[f"{name}_hi"], digits)


def _ci(value, lo, hi, digits: int = 2) -> str:
    if value is None or value != value:
        return "n/a"
    if lo is None or hi is None or lo != lo or hi != hi:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def demo_stats_block() -> str:
    """Claims, probes, robust R² and diagnosis agreement on the demo
    (``bench/demo_stats.py``)."""
    st = load("demo_stats")
    if st is None:
        return missing("demo_stats", "python bench/demo_stats.py")
    runs = st["runs"]
    seeds = [f"seed {r['seed']}" for r in runs]
    head = "| " + " | ".join(seeds) + " |"
    rule = "---:|" * len(runs)
    units = {r["test_unit"] for r in runs}
    if units != {"patient"}:
        raise SystemExit(f"demo_stats: runs paired per {', '.join(sorted(units))}; the README "
                         "describes config.yaml's stats.test_unit: patient")
    pairs = "/".join(str(r["pairs"]) for r in runs)
    query_pairs = "/".join(str(r["query_pairs"]) for r in runs)
    both = head + " " + " | ".join(f"{s}, per query" for s in seeds) + " |"
    lines = ["**The paper's claims, tested** (per attribute: Wilcoxon signed-rank paired per "
             f"test patient — the mean over a patient's queries, {pairs} patients — "
             "Holm-corrected across the 16 attributes, α = 0.05; `evaluate/claims.csv`). "
             "Cells: attributes where the claim holds significantly / attributes tested "
             "(significantly better, significantly worse). The last columns: the same tests "
             f"with every query its own pair ({query_pairs} queries, `stats.test_unit: "
             "query`), which treat a patient's queries as independent:", "",
             "| claim " + both, "|---|" + rule * 2]

    def claim_rows(key):
        """One row per claim of the first run, each run's cells found by the claim's name
        (runs recorded before the claims' order was fixed list them in other orders)."""
        out = []
        for claim in runs[0][key]:
            cells = []
            for k in (key, f"{key}_per_query"):
                for r in runs:
                    (c,) = [x for x in r[k] if x["claim"] == claim["claim"]]
                    cells.append(f"{c['holds']}/{c['tested']} ({c['better']}, {c['worse']})")
            out.append(f"| {claim['statement']} | " + " | ".join(cells) + " |")
        return out

    lines += claim_rows("claims")
    lines += ["", "Multi-attribute retrieval (Fig. 5; per group and criterion, Holm across "
              "them; `evaluate/groups_claims.csv`):", "", "| claim " + both,
              "|---|" + rule * 2]
    lines += claim_rows("group_claims")

    # probes beside the generated answers
    lines += ["", "**A linear read-out of the same features** (`predict/probe_r2.csv`): the "
              "test R² of a ridge probe of each image-level space, beside the tuned model's "
              "generated answers (Fig. 2). Median over the 16 attributes, and on how many "
              "attributes the probe's R² is above the answers':", "",
              "| | " + " | ".join(seeds) + " |", "|---|" + rule]
    bars = list(dict.fromkeys((row["source"], row["space"]) for row in runs[0]["probe_r2"]))
    for source, space in bars:
        cells = []
        for r in runs:
            rows = [x for x in r["probe_r2"] if (x["source"], x["space"]) == (source, space)]
            answers = {x["attribute"]: x["r2"] for x in r["probe_r2"]
                       if x["source"] == "answers"}
            cell = f"{statistics.median(x['r2'] for x in rows if x['r2'] is not None):.2f}"
            if source == "probe":
                above = sum(x["r2"] > answers[x["attribute"]] for x in rows)
                cell += f" (above on {above}/{len(rows)})"
            cells.append(cell)
        name = ("generated answers (tuned)" if source == "answers" else
                f"probe of {space} h_im" if space in ("tuned", "untuned") else
                f"probe of {space}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    # robust metrics, seed by seed per attribute
    first = runs[0]
    lines += ["", f"**R² that one wrong digit cannot wreck** ({seeds[0]}; `predict/r2.csv`, "
              "parsed answers, 95% bootstrap intervals over test patients):", "",
              "| attribute | R² | Spearman ρ | median abs. error | off ×10 or more |",
              "|---|---:|---:|---:|---:|"]
    for row in first["r2"]:
        lines.append(f"| {row['label']} | {_ci_of(row, 'r2_parsed')} | "
                     f"{_ci_of(row, 'spearman')} | {_ci_of(row, 'median_abs_error')} | "
                     f"{100 * row['magnitude_share']:.1f}% |")

    # diagnosis
    lines += ["", "**Diagnosis agreement** (`evaluate/diagnosis.csv`): the share of the top 5 "
              "whose label agrees with the query's; random is the base rate:", "",
              "| label | method | " + " | ".join(seeds) + " |", "|---|---|" + rule]
    for i, row in enumerate(first["diagnosis"]):
        cells = [_ci_of(r["diagnosis"][i], "agreement") for r in runs]
        lines.append(f"| {row['label']} | {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stats_scale_block() -> str:
    """The statistics' time at paper scale (``bench/stats_scale.py``)."""
    st = load("stats_scale")
    if st is None:
        return missing("stats_scale", "python bench/stats_scale.py")
    ev, pr = st["evaluate"], st["probe"]
    points = " · ".join(f"{p['train_rows']:,} x {p['targets']}: {p['seconds']:.0f} s"
                        for p in pr["points"])
    fit = pr["fit"]

    def limit(minutes):
        return f"{minutes:g} min" if minutes else "the site default"

    return (
        f"The statistics at paper scale (`python bench/stats_scale.py`, "
        f"{st['machine']['cpu_count']} cores): **evaluate**'s bootstrap intervals "
        f"({ev['replicates']} replicates over {ev['test_patients']} test patients) and the "
        f"claims' tests (paired per {ev['test_unit']}) on one attribute's "
        f"{ev['rows_per_attribute']:,} percentile rows ({ev['test_queries']:,} queries x "
        f"{len(ev['methods'])} methods x k): {ev['seconds_per_attribute']:.0f} s, so "
        f"{ev['paper_seconds'] / 60:.0f} min for the {ev['attributes']} attributes (the "
        f"profile's runtime: {limit(ev['runtime_limit_minutes'])}). **probe** of one "
        f"{pr['width']:,}-wide space ({pr['folds']} folds, {pr['alphas']} penalties; train "
        f"rows x targets: {points}): t = {fit['a']:.0f} s + {fit['b_per_row'] * 1e3:.2f} ms "
        f"per train row + {fit['c_per_target']:.0f} s per target (its "
        f"{pr['folds'] + 1} eigendecompositions), so {pr['paper_seconds'] / 60:.0f} min at "
        f"{pr['paper_train_rows']:,} x {pr['attributes']} (the profile's runtime: "
        f"{limit(pr['runtime_limit_minutes'])}, per space: "
        f"{', '.join(pr['probed_spaces'])}).\n")


BLOCKS = {"demo_summary": demo_summary_block, "demo_verdict": demo_verdict_block,
          "demo_model": demo_model_block,
          "demo": demo_block, "protocol": protocol_block, "layout_effect": layout_effect_block,
          "benchmarks": benchmarks_block, "groups": groups_block,
          "reliability": reliability_block, "bad_inputs": bad_inputs_block,
          "demo_stats": demo_stats_block,
          "cost": cost_block, "disk": disk_block, "pilot": pilot_block, "scale": scale_block,
          "stats_scale": stats_scale_block}

#: A block's opening marker; the rest of its line says where it comes from.
OPENING = re.compile(r"<!-- generated: (\S+) ")


def pages() -> list[Path]:
    """The pages that may hold generated blocks: README.md and every page of docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def locate(texts: dict[Path, str]) -> dict[str, Path]:
    """Each block's page. Refuses, naming it, a block no page holds, one that two places
    hold, and a marker no function here makes."""
    where: dict[str, Path] = {}
    for path, text in texts.items():
        for name in OPENING.findall(text):
            if name not in BLOCKS:
                raise SystemExit(f"{path.relative_to(REPO)}: a generated block '{name}' that "
                                 f"bench/readme.py does not make (it makes: {', '.join(BLOCKS)})")
            if name in where:
                raise SystemExit(f"the generated block '{name}' is in "
                                 f"{where[name].relative_to(REPO)} and again in "
                                 f"{path.relative_to(REPO)}: keep one")
            where[name] = path
    absent = [name for name in BLOCKS if name not in where]
    if absent:
        raise SystemExit(f"no page holds the generated block(s) {', '.join(absent)} "
                         "(README.md or docs/*.md: <!-- generated: NAME ... --> ... "
                         "<!-- end: NAME -->)")
    return where


def render(text: str, names, path: Path = REPO / "README.md") -> str:
    """``text`` with the blocks ``names`` regenerated between their markers."""
    for name in names:
        pattern = re.compile(rf"(<!-- generated: {re.escape(name)} .*?-->\n)(.*?)"
                             rf"(<!-- end: {re.escape(name)} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{path.relative_to(REPO)}: the block '{name}' has no "
                             f"<!-- end: {name} --> after its opening")
        made = BLOCKS[name]()
        text = pattern.sub(lambda m, made=made: m.group(1) + made + m.group(3), text)
    return text


def render_pages() -> dict[Path, tuple[str, str]]:
    """Every page that holds a block: its text now, and as the results make it."""
    texts = {path: path.read_text(encoding="utf-8") for path in pages()}
    where = locate(texts)
    out = {}
    for path, text in texts.items():
        names = [name for name in BLOCKS if where[name] == path]
        if names:
            out[path] = (text, render(text, names, path))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    a = ap.parse_args(argv)
    stale = []
    for path, (current, new) in render_pages().items():
        if new == current:
            continue
        stale.append(str(path.relative_to(REPO)))
        if not a.check:
            path.write_text(new, encoding="utf-8")
    if a.check and stale:
        print(f"out of date: {', '.join(stale)}: run python bench/readme.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
