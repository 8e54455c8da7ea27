"""Opening and pairing stores: provenance asked for is checked, stores from other manifests are never joined."""
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ProvenanceMismatch
from adaptor_vlp.train.pairs import open_pair_stores, pair_stores
from tests.train.conftest import DATASET, TEXT, VISION, ToyCache, build_toy_cache


def test_images_pair_with_their_studys_text_in_every_split(toy_cache: ToyCache) -> None:
    pairing = pair_stores(toy_cache.image_store, toy_cache.text_store)

    image_studies = toy_cache.image_store.group_ids
    text_ids = toy_cache.text_store.ids
    for split in pairing.splits.values():
        assert np.array_equal(image_studies[split.image_rows], text_ids[split.text_rows])
    assert {name: len(split) for name, split in pairing.splits.items()} == {"train": 160, "validate": 54, "test": 13}


def test_asking_for_other_weights_is_refused_naming_the_field(toy_cache: ToyCache) -> None:
    with pytest.raises(ProvenanceMismatch, match="'weights_sha256' differs") as raised:
        open_pair_stores(toy_cache.cache_dir, DATASET, VISION, TEXT, expect_image={"weights_sha256": "e" * 64})
    assert raised.value.field_name == "weights_sha256"


def test_stores_built_from_different_manifests_are_refused(tmp_path: Path) -> None:
    first = build_toy_cache(tmp_path / "a", manifest_sha="1" * 64)
    second = build_toy_cache(tmp_path / "b", manifest_sha="2" * 64)

    with pytest.raises(ProvenanceMismatch, match="manifest_sha256"):
        pair_stores(first.image_store, second.text_store)
