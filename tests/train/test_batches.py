"""Epoch batches: seeded fresh shuffles, data-pct subsets, sampled views, and shard-wise token streaming."""
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptor_vlp.cache_schema import ArrayName, CacheStore
from adaptor_vlp.train.batches import PairedData, choose_subset, steps_per_epoch
from adaptor_vlp.train.pairs import PairingError, pair_stores
from tests.train.conftest import TOY_RECIPE, ToyCache, build_toy_cache


def paired_data(cache: ToyCache, **overrides) -> PairedData:
    return PairedData(pair_stores(cache.image_store, cache.text_store), TOY_RECIPE.with_overrides(overrides))


def epoch_images(data: PairedData, epoch: int) -> torch.Tensor:
    return torch.cat([batch.image for batch in data.epoch_batches(epoch)])


def row_index(store: CacheStore) -> dict[bytes, int]:
    """Image rows keyed by their plain embedding's bytes, to tell which row a batch row came from."""
    plain = store.read(ArrayName.EMBEDDING).astype(np.float32)
    return {row.tobytes(): index for index, row in enumerate(plain)}


def test_every_epoch_is_a_fresh_shuffle_that_the_seed_reproduces(toy_cache: ToyCache) -> None:
    data = paired_data(toy_cache)

    first, second = epoch_images(data, 1), epoch_images(data, 2)

    assert len(first) == data.steps_per_epoch * data.recipe.batch_size == 160
    assert not torch.equal(first, second)
    assert torch.equal(first.sort(dim=0).values, second.sort(dim=0).values)  # same pairs, new order
    assert torch.equal(first, epoch_images(paired_data(toy_cache), 1))
    assert not torch.equal(first, epoch_images(paired_data(toy_cache, seed=7), 1))


def test_batches_keep_each_image_with_its_studys_text(toy_cache: ToyCache) -> None:
    data = paired_data(toy_cache)
    image_row = row_index(toy_cache.image_store)
    text_of_study = {study: row for row, study in enumerate(toy_cache.text_store.ids)}
    texts = toy_cache.text_store.read(ArrayName.EMBEDDING).astype(np.float32)
    studies = toy_cache.image_store.group_ids

    for batch in data.epoch_batches(3):
        rows = [image_row[image.numpy().tobytes()] for image in batch.image]
        expected = texts[[text_of_study[studies[row]] for row in rows]]
        assert np.array_equal(batch.text.numpy(), expected)


def test_data_pct_subsets_are_deterministic_nested_and_recorded(toy_cache: ToyCache) -> None:
    ten = paired_data(toy_cache, data_pct=10)
    again = paired_data(toy_cache, data_pct=10)
    half = paired_data(toy_cache, data_pct=50)

    assert ten.subset.n_chosen == 16 and ten.subset.n_available == 160
    assert ten.chosen_image_ids == again.chosen_image_ids
    assert ten.subset.ids_sha256 == again.subset.ids_sha256 != half.subset.ids_sha256
    assert set(ten.chosen_image_ids) < set(half.chosen_image_ids)
    assert paired_data(toy_cache, data_pct=10, subset_seed=1).chosen_image_ids != ten.chosen_image_ids
    assert len(epoch_images(ten, 1)) == 16  # fewer pairs than a batch: one batch of all of them


def test_a_subset_too_small_to_contrast_is_refused(toy_cache: ToyCache) -> None:
    with pytest.raises(PairingError, match="--data-pct 0.5 keeps 1 of 160"):
        paired_data(toy_cache, data_pct=0.5)


def test_steps_count_full_batches_or_one_batch_of_everything() -> None:
    assert [steps_per_epoch(n, 32) for n in (10, 32, 63, 64, 100)] == [1, 1, 1, 2, 3]
    assert list(choose_subset(10, 100, 0)) == list(range(10))


def test_views_are_sampled_per_image_per_epoch_and_validation_stays_plain(tmp_path: Path) -> None:
    cache = build_toy_cache(tmp_path, views=2)
    data = paired_data(cache)
    plain = cache.image_store.read(ArrayName.EMBEDDING).astype(np.float32)
    views = cache.image_store.read(ArrayName.VIEWS).astype(np.float32)
    choices = {row.tobytes(): 0 for row in plain}
    for view in range(2):
        choices.update({row.tobytes(): view + 1 for row in views[:, view]})

    shown = [[choices[image.numpy().tobytes()] for image in epoch_images(data, epoch)] for epoch in (1, 2)]

    assert all(set(epoch_choices) == {0, 1, 2} for epoch_choices in shown)  # plain and both views appear
    assert not torch.equal(epoch_images(data, 1).sort(dim=0).values, epoch_images(data, 2).sort(dim=0).values)
    assert torch.equal(epoch_images(data, 1), epoch_images(paired_data(cache), 1))
    assert not torch.equal(epoch_images(data, 1), epoch_images(paired_data(cache, use_views=False), 1))
    validation, _ = next(data.image.chunks(data.validate.image_rows, 1000))
    assert np.array_equal(validation.numpy(), plain[data.validate.image_rows])


@pytest.mark.slow
def test_token_inputs_stream_a_window_of_image_shards_at_a_time(tmp_path: Path, monkeypatch) -> None:
    cache = build_toy_cache(tmp_path, token_count=4, shard_rows=16)
    data = paired_data(cache, inputs="tokens", token_window_shards=2)
    first_tokens = cache.image_store.read(ArrayName.TOKENS)[:, 0].astype(np.float32)
    image_row = {row.tobytes(): index for index, row in enumerate(first_tokens)}
    text_row = {study: row for row, study in enumerate(cache.text_store.ids)}
    text_tokens = cache.text_store.read(ArrayName.TOKENS).astype(np.float32)
    text_masks = cache.text_store.read(ArrayName.TOKEN_MASK)
    image_path = cache.image_store.path
    read_shards: list[set[int]] = []
    original_read = CacheStore.read

    def recording_read(store: CacheStore, name: ArrayName, rows=None):
        if store.path == image_path and name is ArrayName.TOKENS:
            read_shards.append(set((np.asarray(rows) // store.shard_rows).tolist()))
        return original_read(store, name, rows)

    monkeypatch.setattr(CacheStore, "read", recording_read)
    batches = list(data.epoch_batches(1))

    assert len(batches) == data.steps_per_epoch == 5
    assert all(len(shards) <= 2 for shards in read_shards) and len(read_shards) > 1
    seen = []
    for batch in batches:
        rows = [image_row[tokens[0].numpy().tobytes()] for tokens in batch.image]
        text_rows = [text_row[cache.image_store.group_ids[row]] for row in rows]
        assert np.array_equal(batch.text.numpy(), text_tokens[text_rows])
        assert np.array_equal(batch.text_mask.numpy(), text_masks[text_rows])
        seen += rows
    assert len(set(seen)) == len(seen) == 160  # every training pair once
