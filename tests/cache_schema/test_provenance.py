"""Which provenance differences keep two stores in one embedding space, and which do not."""
import pytest

from adaptor_vlp.cache_schema import ProvenanceMismatch
from adaptor_vlp.cache_schema.provenance import check_same_embedding_space
from tests.cache_schema.conftest import make_provenance

TRAINED_ON = make_provenance(preprocessing={"size": 64, "mean": [0.5], "tokens": False, "views": 0,
                                            "forward_precision": "bfloat16"}).to_json()


def test_dataset_extra_arrays_and_forward_precision_keep_the_embedding_space() -> None:
    downstream = make_provenance(dataset="siim", manifest_sha256="c" * 64,
                                 preprocessing={"size": 64, "mean": [0.5], "tokens": True, "views": 2,
                                                "forward_precision": "float32"})
    check_same_embedding_space("siim.zarr", downstream, TRAINED_ON)


@pytest.mark.parametrize("overrides, field", [
    (dict(weights_sha256="d" * 64), "weights_sha256"),
    (dict(pooling="mean"), "pooling"),
    (dict(preprocessing={"size": 32, "mean": [0.5], "forward_precision": "bfloat16"}), "preprocessing.size"),
])
def test_other_weights_pooling_or_preprocessing_leave_the_space(overrides, field) -> None:
    with pytest.raises(ProvenanceMismatch, match=f"'{field}' differs"):
        check_same_embedding_space("other.zarr", make_provenance(**overrides), TRAINED_ON)


def test_the_decode_size_keeps_the_embedding_space_and_a_store_from_before_it_was_recorded_too() -> None:
    trained_on = make_provenance(preprocessing={"size": 64, "decode_size": "full"}).to_json()
    check_same_embedding_space("reduced.zarr", make_provenance(preprocessing={"size": 64, "decode_size": 256}),
                               trained_on)
    check_same_embedding_space("older.zarr", make_provenance(preprocessing={"size": 64}), trained_on)


def test_a_segmentation_store_may_read_its_own_image_frame_only_when_asked() -> None:
    """SIIM at 896 px, the whole image, through an Adaptor trained at 224 px on a centre crop."""
    frame = {"geometry": [{"op": "resize_longest", "size": 256}, {"op": "center_crop", "size": 224}],
             "image_size": 224, "mean": [0.5], "position_embedding": {"method": "hub-interpolated"}}
    trained_on = make_provenance(preprocessing=frame).to_json()
    whole_896 = make_provenance(dataset="siim", preprocessing={
        **frame, "geometry": [{"op": "resize", "size": 896}], "image_size": 896})
    check_same_embedding_space("siim.zarr", whole_896, trained_on, any_input_frame=True)
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.geometry' differs"):
        check_same_embedding_space("siim.zarr", whole_896, trained_on)
    other_positions = make_provenance(preprocessing={**frame, "position_embedding": "<absent>"})
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.position_embedding' differs"):
        check_same_embedding_space("old.zarr", other_positions, trained_on, any_input_frame=True)
