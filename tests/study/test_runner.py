"""Running a study: dependency order, done steps skipped (by hand too), idempotent reruns, failures isolated, a
run killed at any point resumed without redoing a finished step, and image extractions sharing one pass."""
import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from adaptor_vlp.cache_schema import CacheStore
from adaptor_vlp.extract.image_transforms import DecodeSize
from adaptor_vlp.extract.run import run_extraction
from adaptor_vlp.study.log import Outcome, RunLog
from adaptor_vlp.study.plan import plan_study
from adaptor_vlp.study.runner import execute_together, run_study, step_groups
from adaptor_vlp.study.spec import load_spec
from adaptor_vlp.study.steps import ExtractStep, HeadStep, Status, TrainStep
from adaptor_vlp.train.loop import read_completed, train_adaptor
from adaptor_vlp.train.pairs import open_pair_stores, pair_stores
from tests.study.conftest import TASKS, write_spec

KILL_AFTER_STEPS = 11
"""Steps finished before the kill: the 4 manifests, 5 extractions, the Adaptor and a head."""


@pytest.mark.slow
def test_a_study_runs_every_step_in_dependency_order_skipping_one_done_by_hand(finished_study):
    plan = plan_study(load_spec(finished_study.spec))
    assert all(state.status is Status.DONE for state in plan.states().values())
    entries = RunLog(plan.spec.out).entries()
    order = [entry.step for entry in entries]
    assert finished_study.done_by_hand not in order
    assert set(order) == {step.key for step in plan.steps} - {finished_study.done_by_hand}
    for step in plan.steps:
        for dependency in step.depends_on:
            if dependency in order and step.key in order:
                assert order.index(dependency) < order.index(step.key), (dependency, step.key)
    assert all(entry.outcome is Outcome.DONE and entry.seconds >= 0 for entry in entries)


@pytest.mark.slow
def test_a_second_run_does_nothing_and_says_so(finished_study):
    plan = plan_study(load_spec(finished_study.spec))
    before = RunLog(plan.spec.out).entries()
    lines = []
    summary = run_study(plan, on_event=lines.append)
    assert summary.outcomes == [] and summary.complete
    assert summary.lines() == [f"nothing to do: all {len(plan.steps)} steps are done"]
    assert RunLog(plan.spec.out).entries() == before


@pytest.mark.slow
def test_image_extractions_of_one_dataset_ran_as_one_pass_each_with_its_own_step_and_store(finished_study):
    pairs = "extract image tiny-vit on mimic-cxr, extract image tiny-resnet on mimic-cxr"
    assert f"-> 2 steps in one pass: {pairs}" in finished_study.output
    plan = plan_study(load_spec(finished_study.spec))
    latest = RunLog(plan.spec.out).latest()
    for step in plan.steps:
        if isinstance(step, ExtractStep) and step.job.dataset == "mimic-cxr" and step.job.modality.value == "image":
            assert latest[step.key].outcome is Outcome.DONE and str(step.job.store) in latest[step.key].detail
            assert CacheStore.open(step.job.store).provenance.preprocessing["decode_size"] == 64


def test_extractions_share_a_pass_only_with_equal_settings_and_decode_size(demo_trees, tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path, demo_trees, image=("tiny-vit", "tiny-resnet"))))
    extractions = [step for step in plan.steps if isinstance(step, ExtractStep)]
    grouped = [[step.key for step in group] for group in step_groups(extractions)]
    assert ["extract image tiny-vit on mimic-cxr", "extract image tiny-resnet on mimic-cxr"] in grouped
    assert ["extract text tiny-bert on mimic-cxr"] in grouped, "a text backbone runs alone"
    assert ["extract image tiny-vit on rsna", "extract image tiny-resnet on rsna"] in grouped

    begun = next(step for step in extractions if step.key == "extract image tiny-resnet on rsna")
    next(step for step in plan.steps if step.key == "manifest rsna").execute("none")
    run_extraction(dataclasses.replace(begun.job, decode_size=DecodeSize(96), shard_rows=10_000), scheduler="none")
    grouped = [[step.key for step in group] for group in step_groups(extractions)]
    assert ["extract image tiny-resnet on rsna"] in grouped, "a begun store resumes only at the size it records"
    assert ["extract image tiny-vit on rsna"] in grouped


def test_a_backbone_that_fails_in_a_pass_fails_its_own_step_and_the_others_still_extract(demo_trees, tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path, demo_trees, image=("tiny-vit", "tiny-resnet"))))
    next(step for step in plan.steps if step.key == "manifest rsna").execute("none")
    registry = tmp_path / "registry.toml"  # an entry whose model no library knows: it fails only when loaded
    registry.write_text('[backbones.unbuildable]\nmodality = "image"\nsource = "timm"\nmodel_id = "no_such_model"\n'
                        'dim = 8\npooling = "cls"\nrandom_init_seed = 1\n[backbones.unbuildable.image]\n'
                        'steps = [{ op = "resize_shortest", size = 64, interpolation = "bicubic" }, '
                        '{ op = "center_crop", size = 64 }]\n')
    template = next(step for step in plan.steps if isinstance(step, ExtractStep) and step.job.dataset == "rsna")
    healthy, broken = (dataclasses.replace(template, key=f"extract image {name} on rsna",
                                           job=dataclasses.replace(template.job, backbone=name, registry=(registry,)))
                       for name in ("tiny-vit", "unbuildable"))
    assert len(step_groups([healthy, broken])) == 1

    outcomes = {outcome.key: outcome for outcome in execute_together([healthy, broken], "none")}

    assert outcomes[healthy.key].succeeded and CacheStore.open(healthy.job.store).is_complete
    assert not outcomes[broken.key].succeeded and "no_such_model" in outcomes[broken.key].detail


@pytest.mark.slow
def test_a_failing_step_is_reported_and_independent_steps_still_run_on_a_dask_cluster(demo_trees, tmp_path):
    """COVIDx's tree lists images that are not there: its manifest fails; every other task is computed anyway."""
    broken = tmp_path / "covidx-without-images"
    broken.mkdir()
    for name in ("train_COVIDx9A.txt", "test_COVIDx9A.txt"):
        (broken / name).write_text((demo_trees.covidx / name).read_text())
    tasks = {name: TASKS[name] for name in ("rsna-classification", "covidx-classification")}
    plan = plan_study(load_spec(write_spec(tmp_path / "study", demo_trees, tasks=tasks, covidx_root=broken)))
    events = []
    summary = run_study(plan, scheduler="local:1", on_event=events.append)

    [failed] = summary.failed
    assert failed.key == "manifest covidx" and "no usable image" in failed.detail and str(broken) in failed.detail
    states = plan.states()
    rsna_heads = [step.key for step in plan.steps if isinstance(step, HeadStep) and step.task.dataset == "rsna"]
    assert rsna_heads and all(states[key].status is Status.DONE for key in rsna_heads)
    assert set(summary.not_run) == {step.key for step in plan.steps if "covidx" in step.key} - {"manifest covidx"}
    assert summary.not_run["extract image tiny-vit on covidx"] == "waits on manifest covidx"
    assert not summary.complete
    assert RunLog(plan.spec.out).latest()["manifest covidx"].outcome is Outcome.FAILED
    assert any("steps as Dask tasks on tcp://" in line for line in events)  # the heads ran as Dask tasks


@pytest.mark.slow
def test_a_run_killed_mid_way_is_resumed_without_redoing_a_finished_step(demo_trees, tmp_path):
    spec_path = write_spec(tmp_path, demo_trees)
    plan = plan_study(load_spec(spec_path))
    log = RunLog(plan.spec.out)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "adaptor_vlp", "study", "run", str(spec_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(log.entries()) < KILL_AFTER_STEPS and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {entry.step for entry in log.entries() if entry.outcome is Outcome.DONE}
    assert len(finished) >= KILL_AFTER_STEPS and len(finished) < len(plan.steps), "the kill came too late"
    records = _record_times(plan, finished)

    summary = run_study(plan, on_event=lambda line: None)
    rerun = {outcome.key for outcome in summary.outcomes}
    assert summary.complete and not summary.failed
    assert rerun.isdisjoint(finished)
    assert rerun == {step.key for step in plan.steps} - finished
    assert _record_times(plan, finished) == records


def _record_times(plan, keys: set[str]) -> dict[str, float]:
    """Modification times of the records finished steps wrote: result files and training completion markers."""
    times = {}
    for step in plan.steps:
        if step.key in keys and isinstance(step, HeadStep):
            times[step.key] = step.result().path.stat().st_mtime_ns
        elif step.key in keys and isinstance(step, TrainStep):
            times[step.key] = (step.run_dir / "completed.json").stat().st_mtime_ns
    return times


@pytest.mark.slow
def test_train_steps_on_one_image_store_train_as_one_stack_each_logged_and_equal_to_its_solo_run(demo_trees,
                                                                                                  tmp_path):
    """Two text encoders of other widths (tiny-bert 32, MiniLM 384) on one image store: one stack, two runs."""
    tasks = {"rsna-classification": TASKS["rsna-classification"]}
    plan = plan_study(load_spec(write_spec(tmp_path / "study", demo_trees, tasks=tasks, text=("tiny-bert", "minilm"))))
    trains = [step for step in plan.steps if isinstance(step, TrainStep)]
    assert [[step.key for step in group] for group in step_groups(trains)] == [[step.key for step in trains]]
    events = []

    summary = run_study(plan, on_event=events.append)

    assert summary.complete and not summary.failed
    assert f"-> 2 steps in one stack: {', '.join(step.key for step in trains)}" in events
    latest = RunLog(plan.spec.out).latest()
    for step in trains:
        assert latest[step.key].outcome is Outcome.DONE and str(step.run_dir) in latest[step.key].detail
        pairing = pair_stores(*open_pair_stores(step.cache, step.dataset, step.run.vision, step.run.text))
        solo = train_adaptor(pairing, step.run.recipe, tmp_path / "solo" / step.run.name, device="cpu")
        assert solo.best_epoch == read_completed(step.run_dir).best_epoch
        alone, stacked = (load_file(folder / "last.safetensors") for folder in (solo.run_dir, step.run_dir))
        assert all((alone[name] - stacked[name]).abs().max() <= 1e-5 for name in alone), step.key
