"""The dataset registry: one entry per layout, whose options fit its reader, and the CLI built from it."""
import inspect

import pytest
import typer
from typer.testing import CliRunner

from adaptor_vlp.extract.cli import app
from adaptor_vlp.extract.datasets.registry import (
    LAYOUTS,
    ManifestDataset,
    UnknownDataset,
    dataset_layout,
    layouts_accepting,
)

runner = CliRunner()


def test_every_layout_name_has_one_entry_under_its_own_name():
    assert list(LAYOUTS) == list(ManifestDataset)
    assert all(name is layout.name for name, layout in LAYOUTS.items())


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=lambda layout: layout.name.value)
def test_each_option_of_a_layout_sets_a_keyword_its_reader_takes(layout):
    parameters = inspect.signature(layout.reader).parameters

    assert all(keyword in parameters for keyword in layout.options.values())
    assert all(layout.labels) and layout.group and layout.splits and layout.tasks


def test_a_name_or_its_text_finds_the_layout_and_an_unknown_name_lists_the_known_ones():
    assert dataset_layout("rsna") is dataset_layout(ManifestDataset.RSNA) is LAYOUTS[ManifestDataset.RSNA]

    with pytest.raises(UnknownDataset, match="'padchest'; known layouts: mimic-cxr, chexpert, rsna, covidx, siim"):
        dataset_layout("padchest")


def test_the_options_a_layout_accepts_are_read_from_the_registry():
    assert layouts_accepting("--test-fraction") == (ManifestDataset.RSNA, ManifestDataset.SIIM)
    assert layouts_accepting("--reports") == (ManifestDataset.MIMIC_CXR,)


def test_manifest_command_offers_every_layout_and_describes_each_root(tmp_path):
    refused = runner.invoke(app, ["manifest", "--dataset", "padchest", "--root", str(tmp_path), "--out", str(tmp_path)])
    root = next(option for option in typer.main.get_command(app).commands["manifest"].params if option.name == "root")

    assert refused.exit_code == 2
    assert all(layout.value in refused.output for layout in ManifestDataset)
    assert all(f"{name.value}: {layout.description}" in root.help for name, layout in LAYOUTS.items())


def test_an_option_of_another_layout_is_refused_naming_the_layouts_it_applies_to(tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "covidx", "--root", str(tmp_path), "--out", str(tmp_path),
                                 "--test-fraction", "0.2"])

    assert result.exit_code == 2
    assert "--test-fraction does not apply to --dataset covidx (it applies to rsna, siim)" in result.output
