"""Features are joined to the manifest by id, invalid rows are dropped and counted, and a store the
Adaptor was not trained on is refused naming the provenance field."""
import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName, ProvenanceMismatch
from adaptor_vlp.evaluate.features import open_adaptor_run, open_dataset_rows, pooled_features
from adaptor_vlp.evaluate.results import FeatureSpace
from tests.evaluate.conftest import DATASET, IMAGE_PREPROCESSING, UNREADABLE_ROWS, VISION, build_toy_dataset


def test_labels_splits_and_subjects_follow_the_ids_not_the_row_order(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    by_id = {row.dicom_id: row for row in toy.manifest.rows}

    assert [rows.store.ids[row] for row in rows.rows] == list(rows.ids)
    assert list(rows.ids) != [row.dicom_id for row in toy.manifest.rows if row.dicom_id in set(rows.ids)]
    for position in (0, 7, len(rows) - 1):
        row = by_id[rows.ids[position]]
        expected = [np.nan if row.labels[name] is None else row.labels[name] for name in rows.label_names]
        np.testing.assert_array_equal(rows.labels[position], expected)
        assert (rows.splits[position], rows.subjects[position]) == (row.split.value, row.subject_id)
        assert rows.mask_targets[position] == row.mask


def test_rows_that_could_not_be_embedded_are_dropped_and_counted(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    unreadable = {toy.image_store.ids[row] for row in UNREADABLE_ROWS}

    assert len(rows) == len(toy.manifest.rows) - len(UNREADABLE_ROWS)
    assert not unreadable & set(rows.ids)
    assert rows.dropped == {"invalid in the store: unreadable image: truncated": len(UNREADABLE_ROWS)}


def test_backbone_features_are_the_stored_embeddings_of_the_chosen_rows(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    positions = rows.positions("test")
    features = pooled_features(rows, positions, FeatureSpace.BACKBONE, None)

    expected = toy.image_store.read(ArrayName.EMBEDDING, rows.rows[positions]).astype(np.float32)
    np.testing.assert_array_equal(features, expected)


def test_adaptor_features_are_unit_norm_and_do_not_depend_on_the_batch(toy, toy_run):
    run = open_adaptor_run(toy_run)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION, run)
    everything = pooled_features(rows, np.arange(len(rows)), FeatureSpace.ADAPTOR, run)
    some = pooled_features(rows, np.array([5, 2]), FeatureSpace.ADAPTOR, run)

    np.testing.assert_allclose(np.linalg.norm(everything, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(some, everything[[5, 2]], atol=1e-6)
    assert everything.shape[1] == run.loaded.model.config.projection_dim


@pytest.mark.parametrize("override, field", [
    ({"weights_sha256": "9" * 64}, "weights_sha256"),
    ({"preprocessing": {**IMAGE_PREPROCESSING, "image_size": 48}}, "preprocessing.image_size"),
    ({"pooling": "mean"}, "pooling"),
])
def test_a_store_from_other_weights_or_preprocessing_is_refused_naming_the_field(toy_run, tmp_path, override, field):
    other = build_toy_dataset(tmp_path / "cache", dataset="other-cxr", with_text=False, **override)
    run = open_adaptor_run(toy_run)
    with pytest.raises(ProvenanceMismatch) as raised:
        open_dataset_rows(other.cache_dir, other.dataset, VISION, run)
    assert raised.value.field_name == field
    assert field in str(raised.value)


def test_extra_arrays_do_not_stop_the_adaptor_applying_to_another_dataset(toy_run, tmp_path):
    preprocessing = {**IMAGE_PREPROCESSING, "tokens": False, "views": 2}
    other = build_toy_dataset(tmp_path / "cache", dataset="other-cxr", with_text=False, preprocessing=preprocessing)
    rows = open_dataset_rows(other.cache_dir, other.dataset, VISION, open_adaptor_run(toy_run))
    assert len(rows) > 0


def test_a_store_built_from_another_manifest_is_refused(tmp_path):
    toy = build_toy_dataset(tmp_path / "cache", with_text=False, manifest_sha256="0" * 64)
    with pytest.raises(ProvenanceMismatch, match="manifest_sha256"):
        open_dataset_rows(toy.cache_dir, DATASET, VISION)
