"""Stacked training: every point of a group ends where its solo run ends, resumes like one, and is refused like one."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptor_vlp.cache_schema.lock import FolderLock, FolderLocked
from adaptor_vlp.train.loop import RunFolderError, train_adaptor
from adaptor_vlp.train.pairs import StorePairing, pair_stores
from adaptor_vlp.train.stacked import train_stacked
from adaptor_vlp.train.stacked_model import StackError, StackMode
from tests.train.conftest import TOY_RECIPE, ToyCache, add_text_store, build_toy_cache

TOLERANCE = 1e-5
"""Float32 on the CPU: a stacked point's weights must equal its solo run's to this (they are bit for bit here)."""
POINTS = [
    dict(lr=3e-3),
    dict(lr=1e-2, dropout=0.0, seed=7),
    dict(lr=1e-3, weight_decay=0.1, image_weight=0.5, warmup_fraction=0.3, dropout=0.3),
    dict(lr=1e-12, patience=2, select_by="recall", epochs=6),
    dict(lr=3e-3, grad_clip=0.05, epochs=3),
]
"""Differ in every per-point setting: lr, weight decay, warm-up, loss weight, dropout (and none), seed, gradient
clip (active), patience (the fourth stops early, leaving the group) and epochs."""


class Interrupted(Exception):
    pass


def recipes() -> list:
    return [TOY_RECIPE.with_overrides({"epochs": 4, **point}) for point in POINTS]


def solo_runs(cache: ToyCache, out: Path) -> list:
    pairing = pair_stores(cache.image_store, cache.text_store)
    return [train_adaptor(pairing, recipe, out / f"solo-{index}", device="cpu")
            for index, recipe in enumerate(recipes())]


def stacked_folders(out: Path) -> list[Path]:
    return [out / f"stacked-{index}" for index in range(len(POINTS))]


def assert_same_weights(first: Path, second: Path) -> None:
    for kind in ("last", "best"):
        a, b = load_file(first / f"{kind}.safetensors"), load_file(second / f"{kind}.safetensors")
        assert a.keys() == b.keys(), kind
        for name in a:
            difference = (a[name].double() - b[name].double()).abs().max().item()
            assert difference <= TOLERANCE, (first.name, kind, name, difference)


def without_times(record: dict) -> dict:
    record = {key: value for key, value in record.items() if key != "wall_seconds"}
    record["best_metrics"] = {key: value for key, value in record["best_metrics"].items() if key != "seconds"}
    return record


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ToyCache, Path, list]:
    out = tmp_path_factory.mktemp("stacked")
    cache = build_toy_cache(out / "cache")
    return cache, out, solo_runs(cache, out)


def test_every_stacked_point_ends_with_its_solo_weights_metrics_and_result(trained) -> None:
    cache, out, solo = trained

    stacked = train_stacked(pair_stores(cache.image_store, cache.text_store), recipes(), stacked_folders(out),
                            device="cpu")

    assert [result.run_dir for result in stacked] == stacked_folders(out)
    assert stacked[3].stopped_early and stacked[3].epochs_run < 6
    for index, (alone, together) in enumerate(zip(solo, stacked)):
        assert_same_weights(out / f"solo-{index}", together.run_dir)
        assert without_times(together.to_json()) == without_times(alone.to_json())
        assert metric_rows(together.run_dir) == metric_rows(alone.run_dir)
        assert (together.run_dir / "learning_curve.png").is_file()
        assert (together.run_dir / "data_subset.txt").read_text() == (alone.run_dir / "data_subset.txt").read_text()


def test_a_stacked_group_killed_mid_way_resumes_every_point_to_its_solo_weights(trained) -> None:
    cache, out, solo = trained
    pairing = pair_stores(cache.image_store, cache.text_store)
    folders = [out / f"killed-{index}" for index in range(len(POINTS))]

    def kill_during_epoch_2(run_dir: Path, row: dict) -> None:
        if run_dir == folders[1] and row["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_stacked(pairing, recipes(), folders, device="cpu", on_epoch=kill_during_epoch_2, checkpoint_seconds=0)
    saved_epochs = [json.loads((folder / "last.json").read_text())["epoch"] for folder in folders]
    with pytest.raises(RunFolderError, match="pass --resume"):
        train_stacked(pairing, recipes(), folders, device="cpu")

    resumed = train_stacked(pairing, recipes(), folders, device="cpu", resume=True, checkpoint_seconds=0)

    assert saved_epochs == [2, 2, 1, 1, 1]
    for index, (alone, again) in enumerate(zip(solo, resumed)):
        assert_same_weights(out / f"solo-{index}", folders[index])
        assert without_times(again.to_json()) == without_times(alone.to_json())
        assert metric_rows(folders[index]) == metric_rows(alone.run_dir)


def test_finished_points_are_returned_as_recorded_and_the_rest_train(trained) -> None:
    cache, out, solo = trained
    pairing = pair_stores(cache.image_store, cache.text_store)
    folders = [out / "solo-0", out / "mixed-1"]

    results = train_stacked(pairing, recipes()[:2], folders, device="cpu", resume=True)

    assert results[0] == solo[0]
    assert without_times(results[1].to_json()) == without_times(solo[1].to_json())


@pytest.mark.parametrize(("override", "message"), [
    ({"batch_size": 16}, "batch_size=16 differs from 32"),
    ({"data_pct": 50.0}, "data_pct=50.0 differs"),
    ({"projection_dim": 32}, "projection_dim=32 differs"),
    ({"inputs": "tokens"}, "inputs=tokens runs train one at a time"),
])
def test_recipes_that_cannot_share_a_stack_are_refused_naming_the_setting(tmp_path: Path, override: dict,
                                                                          message: str) -> None:
    cache = build_toy_cache(tmp_path / "cache", n_train_studies=20, n_val_studies=5)
    group = [TOY_RECIPE, TOY_RECIPE.with_overrides(override)]

    with pytest.raises(StackError, match=message):
        train_stacked(pair_stores(cache.image_store, cache.text_store), group, [tmp_path / "a", tmp_path / "b"],
                      device="cpu")
    assert not (tmp_path / "a").exists()


def test_a_diverging_point_is_named(trained, tmp_path: Path) -> None:
    cache, _, _ = trained
    group = [TOY_RECIPE, TOY_RECIPE.with_overrides({"lr": 1e30, "grad_clip": 1e30, "warmup_fraction": 0.0})]

    with pytest.raises(FloatingPointError, match=f"{tmp_path / 'b'}: training diverged in epoch 1"):
        train_stacked(pair_stores(cache.image_store, cache.text_store), group, [tmp_path / "a", tmp_path / "b"],
                      device="cpu")


def test_stacked_dropout_masks_come_from_each_points_own_generator(trained) -> None:
    """Two points with the same seed but different dropout draw different masks; the same recipe twice, the same."""
    cache, out, _ = trained
    pairing = pair_stores(cache.image_store, cache.text_store)
    twins = [TOY_RECIPE.with_overrides({"epochs": 1}), TOY_RECIPE.with_overrides({"epochs": 1}),
             TOY_RECIPE.with_overrides({"epochs": 1, "dropout": 0.2})]
    folders = [out / f"twin-{index}" for index in range(3)]

    train_stacked(pairing, twins, folders, device="cpu")

    weights = [load_file(folder / "last.safetensors")["model.image_projection.weight"] for folder in folders]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_a_stack_is_refused_while_another_run_holds_one_of_its_folders(trained, tmp_path: Path) -> None:
    cache, _, _ = trained
    group = [TOY_RECIPE, TOY_RECIPE.with_overrides({"lr": 1e-2})]

    with FolderLock.acquire(tmp_path / "b", "training"):
        with pytest.raises(FolderLocked, match=f"another training run holds its lock {tmp_path / 'b.lock'}"):
            train_stacked(pair_stores(cache.image_store, cache.text_store), group, [tmp_path / "a", tmp_path / "b"],
                          device="cpu")

    assert not (tmp_path / "a").exists() and not (tmp_path / "a.lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(StackMode))
def test_adaptors_on_one_image_store_and_several_text_stores_stack_and_each_ends_as_its_solo_run(
        tmp_path: Path, mode: StackMode) -> None:
    """Text encoders of other widths, and one whose store lacks some texts (fewer steps: a stack of its own)."""
    cache = build_toy_cache(tmp_path / "cache", n_train_studies=60, n_val_studies=20)
    texts = [cache.text_store, add_text_store(cache, "toy-clinical", 20), cache.text_store,
             add_text_store(cache, "toy-lacking", 12, unusable=6)]
    pairings = [pair_stores(cache.image_store, text) for text in texts]
    group = [TOY_RECIPE.with_overrides({"epochs": 3, **point}) for point in POINTS[:4]]
    for index, (pairing, recipe) in enumerate(zip(pairings, group)):
        train_adaptor(pairing, recipe, tmp_path / f"solo-{index}", device="cpu")
    folders = [tmp_path / f"stacked-{index}" for index in range(len(group))]

    stacked = train_stacked(pairings, group, folders, device="cpu", stack_mode=mode)

    assert len(pairings[3].splits["train"]) < len(pairings[0].splits["train"])
    for index, result in enumerate(stacked):
        assert result.run_dir == folders[index]
        assert_same_weights(tmp_path / f"solo-{index}", folders[index])
        for row, solo_row in zip(metric_rows(folders[index]), metric_rows(tmp_path / f"solo-{index}"), strict=True):
            assert row == (solo_row if mode is StackMode.EXACT else pytest.approx(solo_row, rel=1e-4, abs=1e-5))
        recorded = json.loads((folders[index] / "last.json").read_text())["provenance"]["text"]["backbone"]
        assert recorded == texts[index].provenance.backbone


def test_a_stack_shares_one_image_store(trained, tmp_path: Path) -> None:
    cache, _, _ = trained
    other = build_toy_cache(tmp_path / "other", vision="toy-cnn", n_train_studies=20, n_val_studies=5)
    pairings: list[StorePairing] = [pair_stores(cache.image_store, cache.text_store),
                                    pair_stores(other.image_store, other.text_store)]

    with pytest.raises(StackError, match="a stack shares one image store"):
        train_stacked(pairings, [TOY_RECIPE, TOY_RECIPE], [tmp_path / "a", tmp_path / "b"], device="cpu")


def test_the_fast_form_ends_every_point_within_the_tolerance_of_its_solo_run(trained) -> None:
    cache, out, solo = trained
    folders = [out / f"fast-{index}" for index in range(len(POINTS))]

    fast = train_stacked(pair_stores(cache.image_store, cache.text_store), recipes(), folders, device="cpu",
                         stack_mode=StackMode.FAST)

    for index, (alone, together) in enumerate(zip(solo, fast)):
        assert_same_weights(out / f"solo-{index}", together.run_dir)
        assert (together.best_epoch, together.epochs_run, together.stopped_early) == (
            alone.best_epoch, alone.epochs_run, alone.stopped_early)
        for row, solo_row in zip(metric_rows(together.run_dir), metric_rows(alone.run_dir), strict=True):
            assert row == pytest.approx(solo_row, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_a_fast_stack_resumes_only_in_the_fast_form_and_then_ends_as_its_solo_runs(trained) -> None:
    cache, out, solo = trained
    pairing = pair_stores(cache.image_store, cache.text_store)
    folders = [out / f"fast-killed-{index}" for index in range(len(POINTS))]

    def kill_during_epoch_2(run_dir: Path, row: dict) -> None:
        if run_dir == folders[0] and row["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_stacked(pairing, recipes(), folders, device="cpu", on_epoch=kill_during_epoch_2, checkpoint_seconds=0,
                      stack_mode=StackMode.FAST)
    with pytest.raises(RunFolderError, match="was trained with stack_mode='fast', this resume asks for 'exact'"):
        train_stacked(pairing, recipes(), folders, device="cpu", resume=True)
    with pytest.raises(RunFolderError, match="stack_mode='fast'"):
        train_adaptor(pairing, recipes()[0], folders[0], device="cpu", resume=True)

    train_stacked(pairing, recipes(), folders, device="cpu", resume=True, checkpoint_seconds=0,
                  stack_mode=StackMode.FAST)

    for index in range(len(POINTS)):
        assert_same_weights(out / f"solo-{index}", folders[index])
    with pytest.raises(RunFolderError, match="was trained with stack_mode='exact', this resume asks for 'fast'"):
        train_stacked(pairing, recipes(), [out / f"solo-{index}" for index in range(len(POINTS))], device="cpu",
                      resume=True, stack_mode=StackMode.FAST)
