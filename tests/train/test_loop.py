"""The training loop: it learns, it is reproducible bit for bit, it resumes exactly, it stops early."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptor_vlp.train.checkpoint import load_adaptor
from adaptor_vlp.train.loop import RunFolderError, adamw, linear_warmup_decay, read_completed, train_adaptor
from adaptor_vlp.train.loss import contrastive_loss
from adaptor_vlp.train.model import Adaptor, count_trainable_parameters
from adaptor_vlp.train.pairs import pair_stores
from tests.train.conftest import TOY_RECIPE, ToyCache, build_toy_cache

VAL_STUDIES = 40
CHANCE_IMAGE_TO_TEXT_AT_5 = 5 / VAL_STUDIES
"""Each validation image has one correct text among the 40 validation studies' texts."""


class Interrupted(Exception):
    pass


def train(cache: ToyCache, run_dir: Path, resume: bool = False, stop_after: int | None = None,
          checkpoint_seconds: float = 0.0, **overrides):
    def maybe_stop(row: dict) -> None:
        if row["epoch"] == stop_after:
            raise Interrupted
    return train_adaptor(pair_stores(cache.image_store, cache.text_store), TOY_RECIPE.with_overrides(overrides),
                         run_dir, device="cpu", resume=resume, on_epoch=maybe_stop,
                         checkpoint_seconds=checkpoint_seconds)


def tensors(run_dir: Path, kind: str = "last") -> dict[str, torch.Tensor]:
    return {name: value for name, value in load_file(run_dir / f"{kind}.safetensors").items()
            if not name.startswith("rng.")}


def assert_same_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_training_lifts_validation_recall_far_above_chance(toy_cache: ToyCache, tmp_path: Path) -> None:
    result = train(toy_cache, tmp_path / "run", epochs=6)
    untrained = train(toy_cache, tmp_path / "untrained", epochs=1, lr=1e-12)

    recall_at_5 = result.best_metrics["val_image_to_text_recall@5"]
    assert recall_at_5 >= CHANCE_IMAGE_TO_TEXT_AT_5 + 0.6, f"recall@5 {recall_at_5:.3f}, chance 0.125"
    assert untrained.best_metrics["val_image_to_text_recall@5"] < CHANCE_IMAGE_TO_TEXT_AT_5 + 0.15
    csv_lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv_lines] == ["epoch", "1", "2", "3", "4", "5", "6"]
    model = load_adaptor(tmp_path / "run").model
    assert result.trainable_parameters == count_trainable_parameters(model)
    assert (tmp_path / "run" / "learning_curve.png").is_file()
    assert len((tmp_path / "run" / "data_subset.txt").read_text().split()) == 160


def test_same_seed_and_data_give_bitwise_identical_weights(toy_cache: ToyCache, tmp_path: Path) -> None:
    train(toy_cache, tmp_path / "a", epochs=2)
    train(toy_cache, tmp_path / "b", epochs=2)
    train(toy_cache, tmp_path / "c", epochs=2, seed=1)

    assert_same_tensors(tensors(tmp_path / "a"), tensors(tmp_path / "b"))
    assert not torch.equal(tensors(tmp_path / "a")["model.logit_scale"], tensors(tmp_path / "c")["model.logit_scale"])


def test_resuming_after_an_interruption_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    cache = build_toy_cache(tmp_path / "cache", views=2)
    uninterrupted = train(cache, tmp_path / "whole", epochs=4, patience=0)
    with pytest.raises(Interrupted):
        train(cache, tmp_path / "split", epochs=4, patience=0, stop_after=2)
    assert read_completed(tmp_path / "split") is None
    (tmp_path / "split" / ".last.safetensors.4242.tmp").write_bytes(b"a checkpoint half written when killed")

    resumed = train(cache, tmp_path / "split", resume=True, epochs=4, patience=0)

    names = [sorted(p.name for p in (tmp_path / run).iterdir()) for run in ("split", "whole")]
    assert names[0] == names[1]

    assert_same_tensors(tensors(tmp_path / "whole"), tensors(tmp_path / "split"))
    assert_same_tensors(tensors(tmp_path / "whole", "best"), tensors(tmp_path / "split", "best"))
    assert (resumed.best_epoch, resumed.epochs_run) == (uninterrupted.best_epoch, uninterrupted.epochs_run) == (
        uninterrupted.best_epoch, 4)
    without_time = [{k: v for k, v in row.items() if k != "seconds"} for row in (uninterrupted, resumed)
                    for row in [row.best_metrics]]
    assert without_time[0] == without_time[1]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_resume_with_other_settings_or_an_occupied_folder_is_refused(toy_cache: ToyCache, tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        train(toy_cache, tmp_path / "run", epochs=3, stop_after=1)

    with pytest.raises(RunFolderError, match="started with lr=0.003.*asks for 0.5"):
        train(toy_cache, tmp_path / "run", resume=True, epochs=3, lr=0.5)
    with pytest.raises(RunFolderError, match="already holds a started run"):
        train(toy_cache, tmp_path / "run", epochs=3)


def test_a_finished_run_is_returned_as_recorded_on_resume(toy_cache: ToyCache, tmp_path: Path) -> None:
    first = train(toy_cache, tmp_path / "run", epochs=2)
    before = tensors(tmp_path / "run")

    again = train(toy_cache, tmp_path / "run", resume=True, epochs=2)

    assert again == first
    assert_same_tensors(before, tensors(tmp_path / "run"))


def test_training_stops_when_validation_stops_improving(toy_cache: ToyCache, tmp_path: Path) -> None:
    result = train(toy_cache, tmp_path / "run", epochs=10, lr=1e-12, patience=2, select_by="recall")

    assert result.stopped_early
    assert (result.best_epoch, result.epochs_run) == (1, 3)


def test_token_inputs_train_end_to_end(tmp_path: Path) -> None:
    cache = build_toy_cache(tmp_path / "cache", token_count=4, shard_rows=16)

    result = train(cache, tmp_path / "run", epochs=3, inputs="tokens", token_window_shards=2)

    assert result.best_metrics["val_image_to_text_recall@5"] > CHANCE_IMAGE_TO_TEXT_AT_5 + 0.5
    assert load_adaptor(tmp_path / "run").record.recipe["inputs"] == "tokens"


def test_learning_rate_warms_up_then_decays_linearly_over_all_steps() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = linear_warmup_decay(optimizer, total_steps=100, warmup_fraction=0.02)
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()

    assert rates[:3] == [0.5, 1.0, 98 / 98]
    assert rates[50] == pytest.approx(50 / 98)
    assert rates[-1] == pytest.approx(1 / 98) and rates[-1] > 0
    assert all(later <= earlier for earlier, later in zip(rates[1:], rates[2:]))


def test_the_multi_tensor_adamw_steps_exactly_as_the_per_tensor_loop() -> None:
    """`adamw` uses foreach for fewer dispatches; it must not change a single bit of what training computes."""
    recipe = TOY_RECIPE.with_overrides({"weight_decay": 0.1})
    models = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = Adaptor(recipe.adaptor_config(16, 12))
        optimizer = adamw(model, recipe) if foreach else torch.optim.AdamW(
            model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, foreach=False)
        generator = torch.Generator().manual_seed(1)
        for _ in range(5):
            output = model(torch.randn(8, 16, generator=generator), torch.randn(8, 12, generator=generator))
            optimizer.zero_grad()
            contrastive_loss(output.image_embeds, output.text_embeds, output.logit_scale).loss.backward()
            optimizer.step()
        models.append(model)

    assert_same_tensors(models[0].state_dict(), models[1].state_dict())
