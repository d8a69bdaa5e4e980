"""``skinground`` as a newcomer meets it, on a run folder made by hand (no model is loaded):
export an image of the run, point a query at the run from another folder, read its help.
The query itself, on the demo run: tests/test_workflow.py."""

import types

import pytest
from PIL import Image

from skinground import __version__, cli
from skinground.data.images import open_images
from skinground.evaluation import grids
from skinground.retrieval import query as q

from test_query import fake_run


def command(capsys, *args: str) -> tuple[int, str, str]:
    """``skinground ARGS`` in this process: exit status, stdout, stderr."""
    try:
        cli.main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A finished run in tmp/project; the current folder tmp/elsewhere."""
    stored = fake_run(tmp_path / "project")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path / "project", stored


def test_export_an_image_then_point_the_query_at_the_run(project, capsys, monkeypatch):
    root, stored = project
    first = sorted(stored)[-2]  # the run's first test image
    code, stdout, _ = command(capsys, "export-image", "--run", "demo", "--workdir", root)
    assert code == 0
    assert stdout.splitlines() == [
        f"{first}.jpg: test image {first} of run 'demo' (89 x 89 px)",
        f"next: skinground query {first}.jpg --run demo --workdir {root} --attribute area"]
    assert open(f"{first}.jpg", "rb").read() == stored[first]  # the bytes the run read
    # from a folder below the project, no --workdir: found upward
    monkeypatch.chdir(root / "results" / "demo" / "split")
    code, stdout, _ = command(capsys, "export-image", sorted(stored)[0], "--run", "demo",
                              "--out", root / "train.png")
    assert code == 0 and stdout.startswith(f"{root / 'train.png'}: train image ")
    assert "a query finds it first" in stdout
    with Image.open(root / "train.png") as png:
        assert png.format == "PNG"


def test_the_query_warns_of_an_untrained_question_before_the_model(project, capsys,
                                                                   monkeypatch):
    """--group on a run trained on no group questions: one warning line on stderr, before
    any model work (the model's load is stopped here)."""
    root, stored = project
    (root / "lesion.jpg").write_bytes(stored[sorted(stored)[-1]])

    def load(run):
        raise q.InputError("the model would load here")

    monkeypatch.setattr(q.Run, "load", load)
    code, _, stderr = command(capsys, "query", root / "lesion.jpg", "--run", "demo",
                              "--workdir", root, "--group", "size", "-k", "2", "--b", "3")
    assert code == 1
    assert stderr.splitlines() == [
        "skinground query: warning: run 'demo' trained no group questions "
        "(tuples.group_share = 0): the model's answer to size is untrained; the retrieval "
        "(h_im,G) is computed all the same",
        "skinground query: error: the model would load here"]


@pytest.mark.parametrize(("args", "message"), [
    (["export-image", "--run", "demo"],
     "run 'demo': no results/demo/ in {cwd} or any folder above it: run skinground in the "
     "project folder that holds results/demo/ (or below it), or give --workdir DIR"),
    (["export-image", "--run", "demo", "--workdir", "{root}/results/demo"],
     "this is the run's own folder: --workdir {root}"),
    (["export-image", "ISIC_9999999", "--run", "demo", "--workdir", "{root}"],
     "run 'demo': no image 'ISIC_9999999' in its image store "),
    (["export-image", "../ISIC_0000001", "--run", "demo", "--workdir", "{root}"],
     "'../ISIC_0000001': not an image id"),
    (["export-image", "--run", "demo", "--workdir", "{root}", "--out", "a.gif"],
     "--out a.gif: the image is written as .jpg, .jpeg or .png"),
    (["export-image", "--run", "demo", "--workdir", "{root}", "--out", "kept.jpg"],
     "--out kept.jpg: exists; the image overwrites nothing"),
    (["export-image", "--workdir", "{root}"],
     "run 'paper': no results/paper/ in --workdir {root}"),
    (["query", "{root}/kept.jpg", "--run", "demo", "--workdir", "{root}",
      "--attribute", "tbp_lv_nope"],
     "unknown attribute 'tbp_lv_nope'; valid (label or column): area (tbp_lv_areaMM2), "),
    (["query", "{root}/kept.jpg", "--run", "nope", "--workdir", "{root}"],
     "run 'nope': no results/nope/ in --workdir {root}: give the project folder that holds "
     "results/nope/"),
    (["verdict", "--run", "demo", "--workdir", "{root}"],
     "run 'demo' has no verdict yet: {root}/results/demo/verdict/verdict.md is missing (made "
     "by rule verdict; "),
    (["verdict", "--run", "nope", "--workdir", "{root}"],
     "run 'nope': no results/nope/ in --workdir {root}"),
], ids=["not-found", "workdir-is-the-run", "unknown-id", "id-as-path", "out-format",
        "out-exists", "no-run-in-config", "unknown-attribute", "unknown-run", "no-verdict",
        "verdict-unknown-run"])
def test_errors_are_one_line_and_write_nothing(project, capsys, tmp_path, args, message):
    root, stored = project
    (root / "config.yaml").write_text("run: paper\n")  # the project's own config
    (root / "kept.jpg").write_bytes(stored[sorted(stored)[0]])
    (tmp_path / "elsewhere" / "kept.jpg").write_bytes(b"a user's file")
    before = sorted(p.name for p in (tmp_path / "elsewhere").iterdir())
    fill = {"root": root, "cwd": tmp_path / "elsewhere"}
    code, stdout, stderr = command(capsys, *(a.format(**fill) for a in args))
    assert code == 1 and stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith(f"skinground {args[0]}: error: ")
    assert message.format(**fill) in line, line
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == before
    assert (tmp_path / "elsewhere" / "kept.jpg").read_bytes() == b"a user's file"


def test_help_is_plain_text_and_version_says_which(capsys):
    code, stdout, _ = command(capsys, "--help")
    assert code == 0 and "``" not in stdout
    assert "export-image" in stdout and "--workdir DIR" in stdout
    assert "skinground verdict --run demo" in stdout
    for sub in ("query", "export-image", "verdict"):
        code, stdout, _ = command(capsys, sub, "--help")
        assert code == 0 and "``" not in stdout and "--workdir DIR" in stdout
    code, stdout, _ = command(capsys, "--version")
    assert code == 0 and stdout.startswith(f"skinground {__version__}")


def test_table_and_grid_name_questions_by_their_labels(project, tmp_path, monkeypatch):
    """The table heads each question with its label (and column), the grid's rows are
    named by labels as Fig. 3's are, and an untrained answer is marked in both."""
    root, stored = project
    run = q.Run(root, "demo")
    ids = sorted(stored)
    answers = []
    for a in run.asked(["area"], ["size"]):
        answers.append({
            "name": a.name, "label": a.label, "question": a.question, "members": a.members,
            "trained": run.trained(a), "answer": "1.5",
            "predicted": dict.fromkeys(a.members, 1.5),
            "hits": [{"rank": 1, "isic_id": ids[0], "cosine": 0.9,
                      "values": dict.fromkeys(a.members, 2.0)}]})
    text = cli.table(root / "lesion.jpg", answers, run)
    assert "\narea (tbp_lv_areaMM2): What is the area of the lesion in mm²?\n" in text
    assert "  the model's answer: '1.5' (area 1.50)" in text
    assert "\nsize: What are" in text and "  the model's answer (untrained): '1.5'" in text
    assert "| rank | isic_id | cosine | area | long diameter | perimeter |" in text

    drawn = []
    real = grids.draw_grid
    monkeypatch.setattr(grids, "draw_grid", lambda groups, k: drawn.append(groups)
                        or real(groups, k))
    image = Image.new("RGB", (32, 32))
    shown = types.SimpleNamespace(attributes=run.attributes,
                                  store=open_images(root / run.config["data"]["images"]))
    cli.grid(tmp_path / "grid.png", [(root / "lesion.jpg", image, answers)], shown, k=1)
    ((area, size),) = drawn[0]  # one query image, two questions
    assert area[0] == "area\n(lesion.jpg)" and area[1][1] == "model: 1.50 mm²"
    assert size[0] == "size: area\n(lesion.jpg)" and size[1][1] == "untrained: 1.50 mm²"
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_verdict_prints_the_runs_verdict_from_any_folder_below_the_project(project, capsys,
                                                                           monkeypatch):
    """``skinground verdict``: the run's verdict.md as the rule wrote it (--csv: its CSV), the
    run found upward from a folder inside the project, or given with --workdir."""
    root, _ = project
    folder = root / "results" / "demo" / "verdict"
    folder.mkdir(parents=True)
    (folder / "verdict.md").write_text("# Verdict: did run demo reproduce the paper?\n- held\n")
    (folder / "verdict.csv").write_text("expectation,verdict\nk,held\n")
    code, stdout, _ = command(capsys, "verdict", "--run", "demo", "--workdir", root)
    assert code == 0 and stdout == (folder / "verdict.md").read_text()
    monkeypatch.chdir(root / "results")
    code, stdout, _ = command(capsys, "verdict", "--run", "demo", "--csv")
    assert code == 0 and stdout == "expectation,verdict\nk,held\n"
