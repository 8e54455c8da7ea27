"""The segmentation settings record: published defaults, built from plain values, bad keys and values named."""
import pytest

from adaptor_vlp.evaluate.segmentation_protocol import (
    PUBLISHED_RSNA,
    PUBLISHED_SIIM,
    DecoderName,
    LossName,
    SegmentationProtocol,
    SelectionMetric,
)


def test_the_defaults_are_the_published_siim_run():
    protocol = SegmentationProtocol()
    assert (protocol.decoder, protocol.loss, protocol.selection) == (
        DecoderName.PUBLISHED_VIT, LossName.PUBLISHED_MIXED, SelectionMetric.PUBLISHED_DICE)
    assert (protocol.learning_rate, protocol.weight_decay, protocol.batch_size) == (5e-4, 1e-4, 4)
    assert (protocol.validation_interval, protocol.patience_epochs, protocol.patience_validations) == (3, 10, 3)
    assert (PUBLISHED_SIIM.image_size, PUBLISHED_SIIM.max_epochs) == (896, 100)
    assert (PUBLISHED_RSNA.image_size, PUBLISHED_RSNA.max_epochs) == (224, 50)


def test_plain_values_from_a_protocol_file_build_the_record_and_round_trip():
    values = {"decoder": "light", "loss": "dice-bce", "learning_rate": 1e-3, "max_epochs": 20, "views": 4,
              "image_size": 224.0}
    protocol = SegmentationProtocol.from_values(values, "protocols/corrected.toml [segmentation]")
    assert protocol.decoder is DecoderName.LIGHT and protocol.max_epochs == 20 and protocol.image_size == 224
    assert SegmentationProtocol.from_values(protocol.to_json()) == protocol


@pytest.mark.parametrize(("values", "named"), [
    ({"decoder": "unet"}, "decoder = 'unet'"),
    ({"patience": 3}, "unknown key(s) patience"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"max_epochs": 2.5}, "max_epochs = 2.5"),
    ({"views": True}, "views = True"),
])
def test_bad_values_are_refused_naming_the_source_and_key(values, named):
    with pytest.raises(ValueError, match="protocols/x.toml") as error:
        SegmentationProtocol.from_values(values, "protocols/x.toml")
    assert named in str(error.value)
