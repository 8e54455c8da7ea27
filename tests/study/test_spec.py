"""Study specs: the shipped ones load, and every kind of mistake is refused with the file and the key named."""
from dataclasses import replace
from pathlib import Path

import pytest

from adaptor_vlp.evaluate.segmentation_protocol import PUBLISHED_SIIM, DecoderName, LossName
from adaptor_vlp.study.spec import Metric, SpecError, TaskKind, load_spec

REPOSITORY = Path(__file__).resolve().parents[2]
MINIMAL = """
[study]
name = "s"
out = "out"

[pretraining]
root = "mimic"

[backbones]
image = ["tiny-vit"]
text = ["tiny-bert"]

[datasets.rsna]
layout = "rsna"
root = "rsna"

[tasks.t]
dataset = "rsna"
kind = "classify"
metric = "auroc"
"""


def _load(tmp_path: Path, text: str):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return load_spec(path)


def test_the_shipped_specs_load_with_the_papers_shape():
    paper = load_spec(REPOSITORY / "studies" / "paper.toml")
    assert paper.image_backbones == ("resnet-ae", "dinov2-s", "dinov2-b")
    assert paper.text_backbones == ("bert", "biobert", "clinicalbert", "pubmedbert", "cxrbert")
    assert [(task.name, task.kind, task.metric) for task in paper.tasks] == [
        ("rsna-classification@published", TaskKind.CLASSIFY, Metric.AUROC),
        ("rsna-classification@corrected", TaskKind.CLASSIFY, Metric.AUROC),
        ("covidx-classification@published", TaskKind.CLASSIFY, Metric.ACCURACY),
        ("covidx-classification@corrected", TaskKind.CLASSIFY, Metric.ACCURACY),
        ("siim-segmentation@published", TaskKind.SEGMENT, Metric.DICE_PUBLISHED),
        ("siim-segmentation@corrected", TaskKind.SEGMENT, Metric.DICE_POSITIVE),
        ("rsna-segmentation@published", TaskKind.SEGMENT, Metric.DICE_PUBLISHED),
        ("rsna-segmentation@corrected", TaskKind.SEGMENT, Metric.DICE_POSITIVE)]
    assert all(task.fractions == (1.0, 10.0, 100.0) for task in paper.tasks)
    tasks = {task.name: task for task in paper.tasks}
    rsna = tasks["rsna-classification@published"]
    assert paper.published.value(rsna, "dinov2-b", "biobert", 1.0) == 84.4  # published-results.md, RSNA AUROC table
    assert paper.published.value(tasks["rsna-classification@corrected"], "dinov2-b", "biobert", 1.0) is None
    assert paper.published.value(tasks["siim-segmentation@published"], "dinov2-s", "clinicalbert", 1.0) == 41.9
    assert paper.published.value(tasks["rsna-segmentation@published"], "resnet-ae", "cxrbert", 100.0) == 75.5
    # the published code embedded CXR-BERT through a pooler it never trained: its rows read that entry's Adaptors
    assert paper.text_entry(tasks["rsna-segmentation@published"], "cxrbert") == "cxrbert-published-pooler"
    assert paper.text_entry(tasks["rsna-segmentation@corrected"], "cxrbert") == "cxrbert"
    assert paper.text_entry(tasks["rsna-segmentation@published"], "bert") == "bert"
    assert paper.trained_text_backbones == (*paper.text_backbones, "cxrbert-published-pooler")
    assert "holajoa/Adaptor-VL-SSL" in paper.published.source
    assert {method.name for method in paper.published.methods} >= {"ConVIRT", "MGCA (ViT-B/16)"}
    assert set(paper.datasets) == {"rsna-published-classify", "rsna-published-segment", "rsna-corrected",
                                   "covidx-published", "covidx-corrected", "siim-published", "siim-corrected"}
    assert all(task.left_out_reason(image) is None for task in paper.tasks for image in paper.image_backbones)
    assert [task.uses_unet("resnet-ae") for task in paper.tasks] == [False] * 4 + [True] * 4
    assert not tasks["siim-segmentation@published"].uses_unet("dinov2-s")
    assert tasks["siim-segmentation@published"].unet_width_divisor == 1
    demo = load_spec(REPOSITORY / "studies" / "demo.toml")
    # the demo's RSNA tree is smaller than the published RSNA segmentation split's fixed hold-out: corrected only
    assert [task.name for task in demo.tasks] == [task.name for task in paper.tasks
                                                  if task.name != "rsna-segmentation@published"]
    demo_tasks = {task.name: task for task in demo.tasks}
    for name in ("siim-segmentation@published", "siim-segmentation@corrected", "rsna-segmentation@corrected"):
        task = demo_tasks[name]
        assert task.uses_unet("tiny-resnet") and task.unet_width_divisor == 8 and not task.uses_unet("tiny-vit")
        recipe = task.decoder_recipe(demo.datasets[task.dataset].layout.value)
        assert (recipe.decoder, recipe.loss) == (DecoderName.PUBLISHED_VIT, LossName.PUBLISHED_MIXED)
        assert (recipe.image_size, recipe.views, recipe.max_epochs, recipe.batch_size) == (32, 2, 10, 16)
    paper_siim = tasks["siim-segmentation@published"]
    # the protocol file counts patience in validations (3 of every 3 epochs), the published script in epochs (10)
    assert paper_siim.decoder_recipe("siim") == replace(PUBLISHED_SIIM, views=2, patience_epochs=9)
    assert tasks["rsna-segmentation@corrected"].decoder_recipe("rsna").image_size == 224
    assert demo.published is None


def test_a_minimal_spec_gets_the_documented_defaults(tmp_path):
    spec = _load(tmp_path, MINIMAL)
    assert (spec.cache, spec.out, spec.device, spec.views) == (Path("cache"), Path("out"), "auto", 0)
    assert spec.pretraining.name == "mimic-cxr" and spec.tasks[0].fractions == (1.0, 10.0, 100.0)
    assert spec.tasks[0].seeds == (0,) and spec.tasks[0].title == "t"


@pytest.mark.parametrize("change, message", [
    (('out = "out"', 'out = "out"\ndevise = "cpu"'), "study.devise: unknown key"),
    (('name = "s"\n', ""), "study.name: missing"),
    (('image = ["tiny-vit"]', 'image = "tiny-vit"'), "backbones.image: must be a list"),
    (('image = ["tiny-vit"]', 'image = []'), "backbones.image: must not be empty"),
    (('metric = "auroc"', 'metric = "dice-positive"'), "tasks.t.metric: 'dice-positive' does not fit a classify task"),
    (('metric = "auroc"', 'metric = "f1"'), "tasks.t.metric: 'f1' is not one of"),
    (('dataset = "rsna"\nkind', 'dataset = "siim"\nkind'), "tasks.t.dataset: 'siim' is not a dataset of the study"),
    (('layout = "rsna"', 'layout = "kaggle"'), "datasets.rsna.layout: 'kaggle' is not one of"),
    (('metric = "auroc"', 'metric = "auroc"\nfractions = [0, 10]'), "tasks.t.fractions: must be distinct percentages"),
    (('metric = "auroc"', 'metric = "auroc"\nepochs = 5'), "tasks.t.epochs: unknown key"),
    (('metric = "auroc"', 'metric = "auroc"\nleft_out = [{ image = "dinov2-b", reason = "x" }]'),
     "tasks.t.left_out[0].image: 'dinov2-b' is not one of the study's image backbones"),
    (('metric = "auroc"', 'metric = "auroc"\nunet = ["tiny-vit"]'), "tasks.t.unet: unknown key"),
    (('kind = "classify"\nmetric = "auroc"', 'kind = "segment"\nmetric = "dice-positive"\nunet = ["resnet-ae"]'),
     "tasks.t.unet: ['resnet-ae'] are not image backbones of the study"),
    (('kind = "classify"\nmetric = "auroc"', 'kind = "segment"\nmetric = "dice-positive"\nunet_width_divisor = 3'),
     "tasks.t.unet_width_divisor: must divide the published widths"),
    (('kind = "classify"\nmetric = "auroc"', 'kind = "segment"\nmetric = "dice-positive"\nviews = 2'),
     "tasks.t.views: augmented views warp the whole image at the task's input size; set image_size"),
    (('kind = "classify"\nmetric = "auroc"', 'kind = "segment"\nmetric = "dice-positive"\nimage_size = 8'),
     "tasks.t.image_size: must be at least 14"),
    (('metric = "auroc"', 'metric = "auroc"\nviews = 2'), "tasks.t.views: unknown key"),
])
def test_a_mistake_is_refused_naming_the_file_and_the_key(tmp_path, change, message):
    old, new = change
    assert old in MINIMAL
    with pytest.raises(SpecError, match="spec.toml: " + message.replace("[", r"\[").replace("(", r"\(")):
        _load(tmp_path, MINIMAL.replace(old, new, 1))


@pytest.mark.parametrize("extra, message", [
    ('[adaptor]\nrecipe = "fast"', "adaptor.recipe: 'fast' is not one of paper, demo"),
    ('[adaptor]\n[adaptor.settings]\nlr = "high"', "adaptor.settings: lr='high' must be of type float"),
    ('[adaptor]\n[adaptor.grid]\npair = [["a", "b"]]', "adaptor.grid.pair: the study's \\[backbones\\] choose"),
    ('[adaptor]\n[adaptor.grid]\nlearning_rate = [1e-3]', "unknown recipe setting"),
    ('[published]\nsource = "s"\n[published.results.t.tiny-vit]\ntiny-bert = [1.0, 2.0]',
     "published.results.t.tiny-vit.tiny-bert: must list 3 numbers, one per fraction of task t"),
    ('[published]\nsource = "s"\n[published.results.t.dinov2-s]\ntiny-bert = [1.0, 2.0, 3.0]',
     "published.results.t.dinov2-s: not a image backbone of the study"),
    ('[published]\nsource = "s"\n[published.results.other]', "published.results.other: not a task of the study"),
    ('[published]\nnote = "n"', "published.source: missing"),
    ("[study\n", "not valid TOML"),
    ('[datasets.mimic-cxr]\nlayout = "rsna"\nroot = "r"',
     "datasets.mimic-cxr: has the pretraining dataset's cache name"),
])
def test_mistakes_in_the_optional_tables_name_their_key(tmp_path, extra, message):
    with pytest.raises(SpecError, match=message):
        _load(tmp_path, MINIMAL + "\n" + extra + "\n")


@pytest.mark.parametrize(("extra", "message"), [
    ('[backbones.text_by_protocol.corrected]\ntiny-bert = "minilm"',
     r"backbones\.text_by_protocol\.corrected: no task follows protocol 'corrected' \(the tasks follow: none\)"),
    ('[backbones.text_by_protocol.published]\nminilm = "tiny-bert"', "task follows"),
])
def test_a_text_entry_per_protocol_needs_a_protocol_the_tasks_follow(tmp_path, extra, message):
    with pytest.raises(SpecError, match=message):
        _load(tmp_path, MINIMAL + "\n" + extra + "\n")


def test_a_missing_spec_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="no such study spec"):
        load_spec(tmp_path / "absent.toml")


PROTOCOL_TASK = MINIMAL.replace('metric = "auroc"\n', 'protocols = ["published", "corrected"]\n')


def test_a_task_with_protocols_becomes_one_task_per_protocol_on_that_protocols_split(tmp_path):
    spec = _load(tmp_path, PROTOCOL_TASK)

    published, corrected = spec.tasks
    assert (published.name, published.spec_name, published.dataset) == ("t@published", "t", "rsna-published-classify")
    assert (corrected.name, corrected.dataset) == ("t@corrected", "rsna-corrected")
    assert (published.seeds, corrected.seeds) == ((42,), (0, 1, 2))
    assert published.compared_with_published and not corrected.compared_with_published
    assert published.metric is Metric.AUROC and published.head.value == "mlp"
    assert set(spec.datasets) == {"rsna-published-classify", "rsna-corrected"}
    derived = spec.datasets["rsna-published-classify"]
    assert (derived.layout.value, derived.root, derived.protocol.name, derived.protocol_kind) == (
        "rsna", Path("rsna"), "published", TaskKind.CLASSIFY)
    assert derived.protocol_fractions == (1.0, 10.0, 100.0)
    capped = _load(tmp_path, PROTOCOL_TASK.replace("protocols = [", "max_seeds = 1\nprotocols = ["))
    assert [task.seeds for task in capped.tasks] == [(42,), (0,)]


def test_a_protocol_may_read_another_text_entry_for_a_row(tmp_path):
    spec = _load(tmp_path, PROTOCOL_TASK + '[backbones.text_by_protocol.published]\ntiny-bert = "minilm"\n')

    published, corrected = spec.tasks
    assert (spec.text_entry(published, "tiny-bert"), spec.text_entry(corrected, "tiny-bert")) == ("minilm", "tiny-bert")
    assert spec.text_backbones == ("tiny-bert",) and spec.trained_text_backbones == ("tiny-bert", "minilm")


@pytest.mark.parametrize(("entry", "message"), [
    ('other-row = "minilm"', r"backbones\.text_by_protocol\.published\.other-row: not a text backbone of the study"),
    ('tiny-bert = "tiny-bert"', r"text_by_protocol\.published\.tiny-bert: 'tiny-bert' is a row of the study itself"),
    ('tiny-bert = 3', r"text_by_protocol\.published\.tiny-bert: must be a string"),
])
def test_a_text_entry_mistake_names_the_key(tmp_path, entry, message):
    with pytest.raises(SpecError, match=message):
        _load(tmp_path, PROTOCOL_TASK + f"[backbones.text_by_protocol.published]\n{entry}\n")


@pytest.mark.parametrize(("old", "new", "message"), [
    ('protocols = ["published", "corrected"]', 'protocols = ["paper"]',
     r"tasks\.t\.protocols: unknown protocol 'paper'"),
    ('protocols = ["published", "corrected"]', 'protocols = ["published"]\nseeds = [1]',
     r"tasks\.t\.seeds: the task's protocols decide"),
    ('kind = "classify"', 'kind = "segment"\nepochs = 3',
     r"tasks\.t\.protocols: .*no segment task for dataset 'covidx'"),
])
def test_a_protocol_mistake_names_the_key(tmp_path, old, new, message):
    text = PROTOCOL_TASK.replace(old, new).replace('layout = "rsna"', 'layout = "covidx"')
    with pytest.raises(SpecError, match=message):
        _load(tmp_path, text)
