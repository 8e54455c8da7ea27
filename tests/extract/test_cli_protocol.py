"""`adaptor extract manifest --protocol`: the protocol's split written to its own cache folder, one clear line when
the protocol needs a task kind or a split option would contradict it."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from adaptor_vlp.cache_schema.manifest import read_manifest
from adaptor_vlp.extract.cli import app
from adaptor_vlp.protocols import MANIFEST_OPTION

runner = CliRunner()


@pytest.fixture(scope="module")
def rsna_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna-demo") / "rsna"
    result = runner.invoke(app, ["demo-downstream", str(root), "--dataset", "rsna", "--images", "40"])
    assert result.exit_code == 0, result.output
    return root


def test_a_protocol_manifest_goes_to_its_own_folder_and_records_the_protocol(rsna_tree, tmp_path):
    common = ["manifest", "--dataset", "rsna", "--root", str(rsna_tree), "--out", str(tmp_path)]

    published = runner.invoke(app, [*common, "--protocol", "published", "--kind", "classify"])
    corrected = runner.invoke(app, [*common, "--protocol", "corrected"])

    assert published.exit_code == 0 and corrected.exit_code == 0, published.output + corrected.output
    record = read_manifest(tmp_path / "rsna-published-classify").options[MANIFEST_OPTION]
    assert (record["name"], record["split"]["rule"], record["tasks"]) == (
        "published", "mgca-two-stage", ["rsna-classification"])
    assert set(record["subsets"]["rsna-classification"]) == {"1", "10", "100"}
    assert read_manifest(tmp_path / "rsna-corrected").options[MANIFEST_OPTION]["tasks"] == [
        "rsna-classification", "rsna-segmentation"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--protocol", "published"], "splits rsna differently for its tasks (classify, segment): name one with --kind"),
    (["--protocol", "corrected", "--seed", "3"], "--seed cannot be given with --protocol"),
    (["--kind", "classify"], "--kind applies with --protocol only"),
    (["--protocol", "paper"], "unknown protocol 'paper'"),
])
def test_a_protocol_option_that_cannot_be_followed_is_one_line(rsna_tree, tmp_path, extra, message):
    result = runner.invoke(app, ["manifest", "--dataset", "rsna", "--root", str(rsna_tree), "--out", str(tmp_path),
                                 *extra])

    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
