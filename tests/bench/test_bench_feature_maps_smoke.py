"""bench.feature_maps at --quick size: it finishes and prints one row with every column it promises."""
import pytest
from typer.testing import CliRunner

from bench import feature_maps


@pytest.mark.slow
def test_feature_maps_benchmark_prints_bytes_times_and_totals() -> None:
    result = CliRunner().invoke(feature_maps.app, ["--quick"])
    assert result.exit_code == 0, result.output
    assert "command: python -m bench.feature_maps --quick" in result.output and "machine: " in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| 64 |")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[1] == "64x32x32, 256x16x16, 512x8x8, 1024x4x4" and len(cells) == 11
    raw, stored = float(cells[2]), float(cells[3])
    assert raw == pytest.approx((64 * 32 * 32 + 256 * 16 * 16 + 512 * 8 * 8 + 1024 * 4 * 4) * 2 / 2**20, abs=0.01)
    assert 0 < stored < raw and float(cells[10]) > 0
