"""`adaptor cache info` and `adaptor cache verify` end to end."""
import json
from pathlib import Path

from typer.testing import CliRunner

from adaptor_vlp.cache_schema import CacheStore
from adaptor_vlp.cache_schema.manifest import Exclusion, Manifest, ManifestRow, Split, write_manifest
from adaptor_vlp.cli import app
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


def _cache_folder(full_store: CacheStore, tmp_path) -> Path:
    """The store's cache folder (tmp_path, as the README's `cache/`) with a manifest beside the store."""
    rows = tuple(ManifestRow(i, f"5{n // 2:07d}", "1", Split.TRAIN, "PA", f"files/{i}.jpg", "", "no report", {})
                 for n, i in enumerate(full_store.ids))
    excluded = (Exclusion("lost-1", "50000009", "1", "files/lost-1.jpg", "image file missing"),)
    write_manifest(Manifest("demo", tmp_path, tmp_path, rows, excluded=excluded), tmp_path / "demo")
    return tmp_path


def test_info_on_a_cache_folder_lists_each_manifest_and_store(full_store: CacheStore, tmp_path) -> None:
    cache = _cache_folder(full_store, tmp_path)
    human = runner.invoke(app, ["cache", "info", str(cache)])
    assert human.exit_code == 0, human.output
    manifest_line, store_line = human.output.splitlines()[1:]
    assert manifest_line.split()[:3] == ["manifest", "demo", "10"]
    assert f"(1 excluded, listed in {cache / 'demo' / 'excluded.csv'})" in manifest_line
    assert store_line.split()[:8] == ["store", "demo", "image", "tiny-vit", "10", "3/3", "0", "0.0"]
    machine = json.loads(runner.invoke(app, ["cache", "info", str(cache), "--json"]).output)
    assert machine["manifests"][0]["excluded_by_reason"] == {"image file missing": 1}
    assert machine["stores"][0]["complete_shards"] == 3 and machine["stores"][0]["path"] == str(full_store.path)
    single = runner.invoke(app, ["cache", "info", str(full_store.path)])
    assert f"1 excluded, listed in {cache / 'demo' / 'excluded.csv'}" in single.output


def test_verify_on_a_cache_folder_checks_every_store_and_fails_when_one_does(full_store: CacheStore, tmp_path) -> None:
    cache = _cache_folder(full_store, tmp_path)
    whole = runner.invoke(app, ["cache", "verify", str(cache)])
    assert whole.exit_code == 0 and whole.output.splitlines()[-1] == f"ok: 1 stores and 1 manifests under {cache}"
    shard_file = full_store.path / "embedding" / "c" / "0" / "0"
    data = bytearray(shard_file.read_bytes())
    data[3] ^= 1
    shard_file.write_bytes(bytes(data))
    assert runner.invoke(app, ["cache", "verify", "--quick", str(cache)]).exit_code == 0
    broken = runner.invoke(app, ["cache", "verify", str(cache)])
    assert broken.exit_code == 1
    assert f"problem: {full_store.path}: shard 0 (rows 0-3), array 'embedding': embedding/c/0/0 content changed" \
        in broken.output
    assert f"to repair: adaptor cache repair {full_store.path}" in broken.output
    repaired = runner.invoke(app, ["cache", "repair", str(full_store.path)])
    assert repaired.exit_code == 0 and "shards 0 marked incomplete" in repaired.output
    assert "1 of 3 shards incomplete" in runner.invoke(app, ["cache", "verify", str(cache)]).output


def test_verify_and_info_on_a_folder_without_stores_say_what_to_run(tmp_path) -> None:
    for command in ("verify", "info"):
        result = runner.invoke(app, ["cache", command, str(tmp_path)])
        assert result.exit_code == 2 and "no cache store or manifest here or below" in result.output
