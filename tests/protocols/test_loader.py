"""Protocol files: the built-ins read and hold the published values; a broken user file is one clear error."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import tomllib

from adaptor_vlp.protocols import (
    HeadArchitecture,
    HeadTask,
    Metric,
    ProtocolError,
    Schedule,
    SplitRule,
    SubsetRule,
    TrainingBalance,
    load_protocol,
    parse_protocol,
)


def _builtin_text(name: str) -> str:
    return resources.files("adaptor_vlp.protocols").joinpath(f"{name}.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ("published", "corrected"))
def test_each_builtin_protocol_defines_the_four_tasks_of_the_paper(name):
    protocol = load_protocol(name)

    assert protocol.name == name
    assert {(task.dataset, task.kind) for task in protocol.tasks.values()} == {
        ("rsna", HeadTask.CLASSIFY), ("covidx", HeadTask.CLASSIFY), ("siim", HeadTask.SEGMENT),
        ("rsna", HeadTask.SEGMENT)}


def test_the_published_protocol_holds_the_published_scripts_values():
    published = load_protocol("published")
    rsna = published.task("rsna", HeadTask.CLASSIFY)
    covidx = published.task("covidx", HeadTask.CLASSIFY)

    assert (rsna.split.rule, rsna.split.held_out, rsna.split.seed) == (SplitRule.MGCA_TWO_STAGE, 0.3, 0)
    assert (rsna.subset.rule, rsna.subset.seed) == (SubsetRule.PANDAS_SAMPLE, 42)
    assert (rsna.head.architecture, rsna.head.hidden, rsna.head.dropout) == (HeadArchitecture.MLP, 512, 0.1)
    assert (rsna.training.learning_rate, rsna.training.weight_decay, rsna.training.epochs) == (5e-5, 1e-4, 100)
    assert (rsna.training.batch_for(1), rsna.training.batch_for(10), rsna.training.batch_for(100)) == (128, 512, 512)
    assert (rsna.training.patience, rsna.training.seeds, rsna.metric) == (10, (42,), Metric.AUROC)
    assert (covidx.training.batch_size, covidx.training.learning_rate, covidx.training.weight_decay) == (
        128, 5e-4, 0.05)
    assert (covidx.training.epochs, covidx.training.patience, covidx.training.seeds) == (50, 5, (6,))
    assert covidx.training.schedule is Schedule.COSINE_WARM_RESTARTS_PER_EPOCH
    assert covidx.classes == ("normal", "pneumonia", "COVID-19")
    assert published.task("rsna", HeadTask.SEGMENT).split.held_out == 5337 * 2
    assert published.task("siim", HeadTask.SEGMENT).split.balance is TrainingBalance.BALANCED
    assert "siim-row-split" in published.task("siim", HeadTask.SEGMENT).faults


def test_the_finetuners_t0_counts_steps_of_the_whole_run():
    covidx = load_protocol("published").task("covidx", HeadTask.CLASSIFY).training

    assert covidx.t0(1000, 100) == int(0.4 * 8 * 50)  # ceil(1000 / 128) = 8 steps per epoch, 50 epochs


def test_the_corrected_protocol_keeps_the_recipes_and_changes_splits_subsets_seeds_and_headline():
    published, corrected = load_protocol("published"), load_protocol("corrected")
    for key, task in corrected.tasks.items():
        original = published.tasks[key]

        assert task.split.rule is SplitRule.PATIENT_GROUPS
        assert task.subset.rule is SubsetRule.NESTED_SEEDED
        assert len(task.training.seeds) >= 3
        assert (task.training.learning_rate, task.training.batch_size, task.training.epochs) == (
            original.training.learning_rate, original.training.batch_size, original.training.epochs)
        assert task.head == original.head
        assert task.segmentation == original.segmentation
    assert corrected.task("siim", HeadTask.SEGMENT).metric is Metric.DICE_POSITIVE


def test_every_value_in_the_builtin_files_has_a_note():
    """The loader refuses a value without a note, so reading the built-ins proves every value has one."""
    data = tomllib.loads(_builtin_text("published"))
    task = data["tasks"]["covidx-classification"]["training"]
    del task["notes"]["patience"]
    path_note = "tasks.covidx-classification.training.notes"

    with pytest.raises(ProtocolError, match=rf"built-in published: {path_note}: no note for \['patience'\]"):
        parse_protocol(data, "built-in published")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("old", "new", "message"), [
    ('learning_rate = 5e-4', 'learning_rate = "fast"',
     r"covidx-classification.training.learning_rate: must be a number"),
    ('rule = "mgca-train-validate"', 'rule = "by-hand"', r"covidx-classification.split.rule: 'by-hand' is not one of"),
    ('patience = 5\n', 'patience = 5\nwarmup = 3\n', r"covidx-classification.training: unknown key\(s\) \['warmup'\]"),
    ('train_share = 0.8\n', '', r"covidx-classification.split: the mgca-train-validate rule needs 'train_share'"),
])
def test_a_broken_user_file_names_the_file_and_the_key(tmp_path, old, new, message):
    text = _builtin_text("published")
    assert old in text
    path = _write(tmp_path, text.replace(old, new, 1))

    with pytest.raises(ProtocolError, match=rf"{path}: tasks\.{message}"):
        load_protocol(path)


def test_a_user_file_is_read_by_path_and_an_unknown_name_lists_the_builtins(tmp_path):
    path = _write(tmp_path, _builtin_text("corrected").replace('name = "corrected"', 'name = "mine"'))

    assert load_protocol(str(path)).name == "mine"
    with pytest.raises(ProtocolError, match="unknown protocol 'paper'.*published, corrected"):
        load_protocol("paper")
    with pytest.raises(ProtocolError, match="does not exist"):
        load_protocol(tmp_path / "absent.toml")


def test_a_task_the_file_does_not_define_is_refused_with_what_it_defines():
    with pytest.raises(ProtocolError, match=r"no classify task for dataset 'siim'.*'covidx/classify'"):
        load_protocol("published").task("siim", HeadTask.CLASSIFY)
