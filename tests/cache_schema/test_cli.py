"""`adaptor cache info` and `adaptor cache verify` end to end."""
import json

from typer.testing import CliRunner

from adaptor_vlp.cli import app
from adaptor_vlp.cache_schema import CacheStore
from tests.cache_schema.conftest import shard_arrays

runner = CliRunner()


def test_info_prints_human_and_json_summaries(full_store: CacheStore) -> None:
    human = runner.invoke(app, ["cache", "info", str(full_store.path)])
    assert human.exit_code == 0, human.output
    assert "tiny-vit" in human.output and "3/3 complete" in human.output
    machine = runner.invoke(app, ["cache", "info", str(full_store.path), "--json"])
    assert json.loads(machine.output)["rows"] == 10


def test_verify_exits_zero_when_whole_and_one_with_the_reason_when_not(empty_store: CacheStore) -> None:
    empty_store.write_shard(0, shard_arrays(empty_store, 0))
    broken = runner.invoke(app, ["cache", "verify", str(empty_store.path)])
    assert broken.exit_code == 1 and "incomplete" in broken.output
    for span in empty_store.incomplete_shards():
        empty_store.write_shard(span.index, shard_arrays(empty_store, span.index))
    whole = runner.invoke(app, ["cache", "verify", str(empty_store.path)])
    assert whole.exit_code == 0 and whole.output.startswith("ok")


def test_info_on_a_missing_store_says_where_and_what_to_do(tmp_path) -> None:
    result = runner.invoke(app, ["cache", "info", str(tmp_path / "nope.zarr")])
    assert result.exit_code == 2 and "run the extract stage" in result.output
