"""Sweeps: grids from TOML or YAML, one run folder per combination, skipping finished runs, a leaderboard."""
import csv
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adaptor_vlp.train.recipe import RecipeName, Selection
from adaptor_vlp.train.sweep import (
    GridError,
    default_stack_size,
    expand_grid,
    plan_groups,
    read_grid,
    run_sweep,
)
from tests.train.conftest import DATASET, TEXT, VISION, ToyCache, add_text_store, build_toy_cache

TOY_GRID = """
recipe = "demo"
pair = [["toy-vit", "toy-bert"], ["toy-vit", "other-bert"]]
lr = [0.003, 0.0003]
epochs = 2
batch_size = 32
projection_dim = 32
num_heads = 4
ffn_dim = 64
"""


@pytest.fixture
def two_text_backbones(tmp_path: Path) -> ToyCache:
    cache = build_toy_cache(tmp_path / "cache")
    build_toy_cache(tmp_path / "other", text="other-bert")
    (cache.cache_dir / DATASET / "text" / "other-bert.zarr").symlink_to(
        tmp_path / "other" / DATASET / "text" / "other-bert.zarr")
    return cache


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_two_by_two_grid_trains_four_runs_ranks_them_and_skips_them_next_time(
        two_text_backbones: ToyCache, tmp_path: Path) -> None:
    runs = expand_grid(read_grid(write(tmp_path / "grid.toml", TOY_GRID)))
    out = tmp_path / "sweep"

    first = run_sweep(runs, two_text_backbones.cache_dir, DATASET, out, device="cpu")
    second = run_sweep(runs, two_text_backbones.cache_dir, DATASET, out, device="cpu")

    assert len(first) == 4 and not any(outcome.skipped for outcome in first)
    assert len(second) == 4 and all(outcome.skipped for outcome in second)
    assert [o.result for o in first] == [o.result for o in second]
    assert sorted(path.name for path in out.iterdir() if path.is_dir()) == sorted(run.name for run in runs)
    assert "toy-vit+other-bert__recipe-demo__lr-0.003__epochs-2" in runs[2].name
    with open(out / "leaderboard.csv") as handle:
        board = list(csv.DictReader(handle))
    recalls = [float(row["val_recall@5"]) for row in board]
    assert recalls == sorted(recalls, reverse=True)
    assert {"run", "vision", "text", "lr", "trainable_parameters", "epochs_run", "best_epoch", "wall_seconds"} <= set(
        board[0])
    assert (out / "leaderboard.md").read_text().count("\n| ") == 5  # header and four runs


def test_ranking_by_loss_puts_the_lowest_loss_first(toy_cache: ToyCache, tmp_path: Path) -> None:
    grid = {"lr": [0.003, 1e-6], "epochs": [1], "batch_size": [32], "projection_dim": [32], "num_heads": [4]}
    runs = expand_grid(grid, RecipeName.DEMO, VISION, TEXT)

    ranked = run_sweep(runs, toy_cache.cache_dir, DATASET, tmp_path, device="cpu", rank_by=Selection.LOSS)

    losses = [outcome.result.best_metrics["val_loss"] for outcome in ranked]
    assert losses == sorted(losses)


@pytest.mark.slow
def test_a_local_dask_cluster_trains_the_runs_in_worker_processes(toy_cache: ToyCache, tmp_path: Path) -> None:
    grid = {"seed": [1, 2], "epochs": [1], "batch_size": [32], "projection_dim": [32], "num_heads": [4]}
    runs = expand_grid(grid, RecipeName.DEMO, VISION, TEXT)

    parallel = run_sweep(runs, toy_cache.cache_dir, DATASET, tmp_path, device="cpu", scheduler="local:1")
    again = run_sweep(runs, toy_cache.cache_dir, DATASET, tmp_path, device="cpu")

    assert sorted(outcome.run.name for outcome in parallel) == sorted(run.name for run in runs)
    assert not any(outcome.skipped for outcome in parallel) and all(outcome.skipped for outcome in again)
    assert (tmp_path / "leaderboard.csv").is_file()


def test_yaml_grids_with_crossed_backbone_lists_are_read(tmp_path: Path) -> None:
    grid = read_grid(write(tmp_path / "grid.yaml", "vision: [a, b]\ntext: [c]\nseed: [1, 2]\n"))

    runs = expand_grid(grid)

    assert [(run.vision, run.text, run.recipe.seed) for run in runs] == [
        ("a", "c", 1), ("a", "c", 2), ("b", "c", 1), ("b", "c", 2)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate = [0.1]\npair = [['a', 'b']]", "unknown recipe setting.*learning_rate"),
        ("lr = [-1.0]\npair = [['a', 'b']]", "lr must be positive"),
        ("pair = [['a']]", "key 'pair' needs"),
        ("lr = []\npair = [['a', 'b']]", "key 'lr' has an empty list"),
        ("recipe = ['fast']\npair = [['a', 'b']]", "key 'recipe' must be one of"),
        ("lr = [0.1]", "no backbones"),
        ("pair = [['a', 'b']]\nvision = ['c']", "not both"),
        ("lr = [0.1", "not valid TOML"),
    ],
)
def test_bad_grids_are_refused_naming_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "grid.toml", text)
    with pytest.raises(GridError, match=message) as raised:
        expand_grid(read_grid(path), source=str(path))
    assert str(path) in str(raised.value)


def leaderboard_without_times(out: Path) -> list[dict]:
    with open(out / "leaderboard.csv") as handle:
        return [{key: value for key, value in row.items() if key != "wall_seconds"} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_a_stacked_sweep_gives_the_weights_and_leaderboard_of_one_run_at_a_time(toy_cache: ToyCache,
                                                                                tmp_path: Path) -> None:
    add_text_store(toy_cache, "toy-clinical", 20)
    grid = {"text": [TEXT, "toy-clinical"], "lr": [0.003, 0.01], "dropout": [0.1, 0.0], "seed": [1], "epochs": [3],
            "batch_size": [32], "projection_dim": [32], "num_heads": [4]}
    runs = expand_grid(grid, RecipeName.DEMO, VISION)

    alone = run_sweep(runs, toy_cache.cache_dir, DATASET, tmp_path / "alone", device="cpu", stack_size=1)
    stacked = run_sweep(runs, toy_cache.cache_dir, DATASET, tmp_path / "stacked", device="cpu", stack_size=3)

    assert leaderboard_without_times(tmp_path / "alone") == leaderboard_without_times(tmp_path / "stacked")
    assert [o.run.name for o in alone] == [o.run.name for o in stacked]
    for run in runs:
        first = load_file(tmp_path / "alone" / run.name / "best.safetensors")
        second = load_file(tmp_path / "stacked" / run.name / "best.safetensors")
        assert all((first[name] - second[name]).abs().max() <= 1e-5 for name in first), run.name


def test_runs_are_grouped_by_image_store_and_shared_settings_in_grid_order_across_text_stores() -> None:
    grid = {"pair": [["a", "b"], ["a", "c"], ["d", "b"]], "batch_size": [32, 64], "lr": [0.1, 0.2, 0.3]}
    runs = expand_grid(grid, RecipeName.DEMO)
    tokens = expand_grid({"pair": [["a", "b"]], "inputs": ["tokens"], "seed": [1, 2]}, RecipeName.DEMO)

    groups = plan_groups(runs + tokens, stack_size=2)

    names = [[run.name for run in group] for group in groups]
    assert names[:2] == [[runs[0].name, runs[1].name], [runs[2].name, runs[6].name]]
    assert len(groups) == 3 + 3 + 2 + 2 + 2
    assert all({(run.vision, run.recipe.batch_size) for run in group} == {
        (group[0].vision, group[0].recipe.batch_size)} for group in groups)
    assert [len(group) for group in groups[-2:]] == [1, 1]
    assert len(plan_groups(runs, stack_size=1)) == len(runs)
    assert default_stack_size("cpu") == 1
