"""Checkpoints round-trip through safetensors + JSON, restore training state exactly, and refuse altered files."""
import json
import struct
from pathlib import Path

import pytest
import torch

from adaptor_vlp.train.checkpoint import (
    CheckpointError,
    CheckpointKind,
    CheckpointRecord,
    checkpoint_paths,
    file_sha256,
    load_adaptor,
    read_record,
    restore_training_state,
    save_checkpoint,
    save_weights,
)
from adaptor_vlp.train.loop import linear_warmup_decay
from adaptor_vlp.train.loss import contrastive_loss
from adaptor_vlp.train.model import Adaptor, AdaptorConfig

CONFIG = AdaptorConfig(image_dim=6, text_dim=5, projection_dim=8, num_layers=1, num_heads=2, ffn_dim=16)


def trained_state(steps: int = 3) -> tuple[Adaptor, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    model = Adaptor(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    scheduler = linear_warmup_decay(optimizer, total_steps=10, warmup_fraction=0.2)
    for _ in range(steps):
        output = model(torch.randn(4, 6), torch.randn(4, 5))
        contrastive_loss(output.image_embeds, output.text_embeds, output.logit_scale).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def record(epoch: int = 2) -> CheckpointRecord:
    return CheckpointRecord(
        adaptor_config=CONFIG.to_dict(), recipe={"lr": 0.01}, epoch=epoch, step=3, metrics={"val_loss": 1.5},
        best_epoch=epoch, best_metrics={"val_loss": 1.5}, provenance={"image": {"backbone": "toy-vit"}},
        data_subset={"data_pct": 100.0}, trainable_parameters=123, wall_seconds=1.0,
    )


def test_saved_adaptor_loads_with_identical_weights_and_record(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained_state()
    save_checkpoint(tmp_path, CheckpointKind.BEST, model, optimizer, scheduler, record())

    loaded = load_adaptor(tmp_path, CheckpointKind.BEST)

    assert not loaded.model.training
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    assert loaded.record == record()
    assert loaded.weights_sha256 == file_sha256(tmp_path / "best.safetensors")


def test_files_are_safetensors_and_json_not_pickles(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained_state()
    tensor_path = save_checkpoint(tmp_path, CheckpointKind.LAST, model, optimizer, scheduler, record())
    json_path = checkpoint_paths(tmp_path, CheckpointKind.LAST).record

    raw = tensor_path.read_bytes()
    header_length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_length])  # safetensors: length, JSON header, raw tensor bytes
    assert {"model.logit_scale", "rng.torch", "optimizer.state.0.exp_avg"} <= set(header)
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # neither pickle nor torch.save zip
    assert json.loads(json_path.read_text())["recipe"] == {"lr": 0.01}


def test_restoring_training_state_continues_exactly(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained_state(steps=3)
    save_checkpoint(tmp_path, CheckpointKind.LAST, model, optimizer, scheduler, record())
    expected_draw = torch.rand(3)
    fresh_model, fresh_optimizer, fresh_scheduler = trained_state(steps=0)
    torch.manual_seed(99)

    restored = restore_training_state(tmp_path, CheckpointKind.LAST, fresh_model, fresh_optimizer, fresh_scheduler)

    assert restored.epoch == 2
    assert torch.equal(torch.rand(3), expected_draw)  # the torch generator is where it was
    assert fresh_scheduler.last_epoch == scheduler.last_epoch == 3
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    for fresh_parameter, parameter in zip(fresh_model.parameters(), model.parameters()):
        assert torch.equal(fresh_parameter, parameter)
        mine, theirs = fresh_optimizer.state[fresh_parameter], optimizer.state[parameter]
        assert set(mine) == set(theirs) and all(torch.equal(mine[key], theirs[key]) for key in theirs)


def test_a_tensor_file_that_no_longer_matches_its_json_is_refused(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained_state()
    tensor_path = save_checkpoint(tmp_path, CheckpointKind.BEST, model, optimizer, scheduler, record())
    raw = bytearray(tensor_path.read_bytes())
    raw[-1] ^= 0xFF
    tensor_path.write_bytes(bytes(raw))

    with pytest.raises(CheckpointError, match="SHA-256"):
        load_adaptor(tmp_path)


def test_a_missing_checkpoint_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        read_record(tmp_path, CheckpointKind.BEST)


def test_a_weights_only_checkpoint_loads_for_inference_but_is_no_resume_point(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained_state()
    tensor_path = save_weights(tmp_path, CheckpointKind.BEST, model.state_dict(), record())

    loaded = load_adaptor(tmp_path, CheckpointKind.BEST)

    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    raw = tensor_path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert not any(name.startswith(("optimizer.", "rng.")) for name in header)
    with pytest.raises(CheckpointError, match="weights only"):
        restore_training_state(tmp_path, CheckpointKind.BEST, *trained_state(steps=0))
