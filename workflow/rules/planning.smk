# What stops a run before any job starts, and what planning checks against the files already
# made: weights not in place, a run folder this user cannot write in, a SLURM account still
# the site profile's placeholder (the Snakefile's onstart), k above the train split, a global
# batch the train job's GPUs do not divide. And the site's GPU model, handed to the GPU rules.

from snakemake.resources import Resources

#: Where the base model's weights come from (transformers' format), for the message when
#: they are missing; an encoder names its own (model.encoders.<name>.hub).
BASE_HUB_REPO = "Qwen/Qwen2-VL-7B-Instruct"


#: Weights that are not in place yet: key ("base" or an encoder's name) -> the message that
#: says how to fetch them. A plan (lint, dry run, --dag, --summary, --report) goes on without
#: them, with one warning; a real run that would load them stops before any job starts
#: (``onstart`` in the Snakefile: ``missing_weights_stop``).
MISSING_WEIGHTS = {}


def weights(key):
    """A local model folder as an input: config model.base (``key`` "base") or an encoder's
    path (``key`` its name). When it is missing (and the demo does not build it) it is left
    out of the job's inputs, so the plan can still be made, and recorded in
    ``MISSING_WEIGHTS``: the first time, a warning names the folder and the command that
    fetches it."""
    name, path, hub = _weights_source(key)
    if config["model"]["build_tiny"] or Path(path).exists():
        return path
    if key not in MISSING_WEIGHTS:
        MISSING_WEIGHTS[key] = (
            f"{name}: the folder {path} does not exist. Fetch the weights once, on a node "
            f"with internet access: hf download {hub} --local-dir {path}  (see "
            "docs/cluster.md, 'Weights for the cluster')"
        )
        logger.warning(
            f"{MISSING_WEIGHTS[key]}. Planning goes on without them; a run that needs them "
            "stops before any job starts."
        )
    return []


def weights_path(key):
    """The folder of ``weights(key)`` as a job's param, for a command line (a job's input
    lacks it while it is missing): not a rerun trigger, the input is."""
    return untracked(_weights_source(key)[1])


def _weights_source(key):
    """The config key, local folder and hub repository of ``weights(key)``."""
    if key == "base":
        return "model.base", config["model"]["base"], BASE_HUB_REPO
    encoder = ENCODERS[key]
    return f"model.encoders.{key}.path", encoder["path"], encoder["hub"]


def loaded_weights(job):
    """The keys of ``weights()`` a job loads (``plan.MODEL_RULES``)."""
    if job.rule.name not in plan.MODEL_RULES:
        return set()
    model = job.wildcards.get("model")
    return {model} if model in ENCODERS else {"base"}


def missing_weights_stop():
    """Stop a real run before any job starts when a job that will run loads weights that are
    not in place (``MISSING_WEIGHTS``), with the message that says how to fetch them."""
    if not MISSING_WEIGHTS:
        return
    needed = set()
    for job in workflow.dag.needrun_jobs():
        needed |= loaded_weights(job) & MISSING_WEIGHTS.keys()
    if needed:
        raise WorkflowError("\n".join(MISSING_WEIGHTS[k] for k in sorted(needed)))


def unwritable_stop():
    """Stop a real run before any job starts when a job that will run writes in a folder this
    user cannot write in (a read-only run folder with writable files in it gave a Snakemake
    traceback when it removed a job's old output): one line naming the folder and a job."""
    for job in workflow.dag.needrun_jobs():
        blocked = unwritable_folders([*job.output, *job.log])
        if blocked:
            raise WorkflowError(
                f"{blocked[0]}: this folder is not writable, and rule {job.rule.name} writes "
                f"in it; make it writable (chmod u+w {blocked[0]}) or name another run "
                "(config key run)"
            )


def _check_k_against_the_split():
    """Once the split exists, k hits per query need as many train images (the job checks
    it too, for a split made in the same run)."""
    path = Path(res(out.SPLIT_IDS, split="train"))
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip())
    if config["retrieve"]["k"] > n:
        raise WorkflowError(
            f"retrieve.k = {config['retrieve']['k']} is more than the {n} train images of "
            f"{path}: lower retrieve.k"
        )


_check_k_against_the_split()


def _constant(resource):
    """A resource's value when it is a constant (an expression is evaluated per job)."""
    if resource is None or resource.is_evaluable():
        return None
    return resource.value


def _check_the_global_batch_against_the_gpus():
    """The train job's GPUs (a profile's set-resources, capped by a profile's or the command
    line's ``resources``, as Snakemake caps the job's) each train an equal share of the global
    batch (``global_batch.train_batch``); the job would stop at its start otherwise."""
    gpu = (workflow.resource_settings.overwrite_resources.get("train") or {}).get("gpu")
    gpu = getattr(gpu, "value", gpu)
    cap = _constant(workflow.global_resources.get("gpu"))
    if isinstance(gpu, int) and isinstance(cap, int):
        gpu = min(gpu, cap)
    if isinstance(gpu, int) and gpu > 0:
        try:
            train_batch(config["train"]["global_batch"], config["train"]["per_device_batch"], gpu)
        except ValueError as err:
            raise WorkflowError(f"{err}: the train job's resources.gpu") from None


_check_the_global_batch_against_the_gpus()


#: The site profile's account until its user names theirs (profiles/slurm/config.yaml).
ACCOUNT_PLACEHOLDER = "YOUR_ACCOUNT"

#: The site profile, for messages when the run does not name it (its partition file is itself).
SITE_PROFILE = "profiles/slurm/config.yaml"


def placeholder_account_stop():
    """Stop a SLURM run before anything is submitted while a job that will run has the site
    profile's placeholder account (a cluster with accounting refuses each job at submission;
    one without it files them all under a made-up account): one line naming the file and the
    key. Dry runs and lint never get here (``onstart``)."""
    plugin, settings = workflow.executor_plugin, workflow.executor_settings
    if plugin is None or plugin.name != "slurm" or getattr(settings, "no_account", False):
        return
    if not any(
        job.resources.get("slurm_account") == ACCOUNT_PLACEHOLDER
        for job in workflow.dag.needrun_jobs()
    ):
        return
    site = getattr(settings, "partition_config", None)
    site = site if site and Path(site).name == "config.yaml" else SITE_PROFILE
    raise WorkflowError(
        f"{site}: default-resources slurm_account is still the placeholder "
        f"{ACCOUNT_PLACEHOLDER}; name your SLURM account there (sacctmgr -n show "
        "associations user=$USER format=account lists yours)"
    )


def _gpu_model_to_the_gpu_rules():
    """The site profile names its GPU model once, in default-resources (``gpu_model``). A
    default resource reaches every job, and the SLURM plugin asks for a GPU of that model
    (``sbatch --gpus=<model>:1``) for any job that has one, CPU jobs included. So, before any
    rule is made, it leaves the defaults and joins the set-resources of each rule the
    workflow profile gives GPUs (``gpu`` > 0), where a rule's own ``gpu_model`` (a
    ``--set-resources``) stays. What Snakemake passes to a job's own Snakemake (its
    ``--default-resources`` and ``--set-resources``) is built from the same two mappings."""
    settings = workflow.resource_settings
    defaults = settings._parsed_default_resources
    if "gpu_model" not in defaults:
        return
    model = defaults["gpu_model"]
    rest = Resources()
    for name, value in defaults.items():
        if name != "gpu_model":
            rest[name] = value
    settings._parsed_default_resources = rest
    for resources in settings._parsed_overwrite_resources.values():
        gpu = _constant(resources.get("gpu"))
        if isinstance(gpu, int) and gpu > 0:
            resources.setdefault("gpu_model", model)


_gpu_model_to_the_gpu_rules()
