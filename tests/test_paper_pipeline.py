"""The paper's study end to end, offline: its three image backbones with its preprocessing and a BERT-family
text encoder, each in its published file layout with seeded random weights, through `adaptor extract`,
`adaptor train run --recipe paper` and `adaptor evaluate retrieval`.

The image backbones are the full architectures (ViT-S/14, ViT-B/14, ResNet-101 autoencoder); the
text encoder is BERT-base wide (768) but one layer deep, which keeps the Adaptor's shape (and so
its parameter counts) the paper's while the test stays within a minute on two cores.
"""
import re

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel
from typer.testing import CliRunner

from adaptor_vlp.cli import app
from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.weights import locate_weights
from tests.extract.published_layouts import hub_snapshot, save_timm_model, save_xrv_autoencoder

PAPER_ADAPTOR_PARAMETERS = {"resnet-ae": 12_011_009, "dinov2-s": 11_912_705, "dinov2-b": 12_207_617}


@pytest.fixture
def published_weights(tmp_path, monkeypatch):
    from huggingface_hub import constants as hub_constants

    cache = tmp_path / "hf-home" / "hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    save_timm_model(cache, "vit_small_patch14_dinov2.lvd142m", seed=0)
    save_timm_model(cache, "vit_base_patch14_dinov2.lvd142m", seed=1)
    save_xrv_autoencoder(tmp_path / "home", seed=2)
    bert = hub_snapshot(cache, "bert-base-uncased")
    torch.manual_seed(3)
    BertModel(BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=256,
                         vocab_size=30522)).save_pretrained(bert)
    AutoTokenizer.from_pretrained(locate_weights(get_spec("minilm"))).save_pretrained(bert)


def invoke(*arguments: str) -> str:
    result = CliRunner().invoke(app, list(arguments))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_the_papers_three_image_backbones_and_bert_run_extract_train_and_evaluate(published_weights, tmp_path):
    data, cache, runs = tmp_path / "demo", tmp_path / "cache", tmp_path / "runs"
    invoke("extract", "demo-data", str(data), "--subjects", "6")
    invoke("extract", "manifest", "--dataset", "mimic-cxr", "--root", str(data), "--out", str(cache))
    invoke("extract", "texts", "--cache", str(cache), "--backbone", "bert")

    for vision, parameters in PAPER_ADAPTOR_PARAMETERS.items():
        invoke("extract", "images", "--cache", str(cache), "--backbone", vision, "--workers", "0", "--batch-size", "8")
        output = invoke("train", "run", "--cache", str(cache), "--vision", vision, "--text", "bert", "--recipe",
                        "paper", "--epochs", "1", "--out", str(runs / vision))
        trained = int(re.search(r"([\d,]+) trainable parameters", output).group(1).replace(",", ""))
        assert trained == parameters, vision

    report = invoke("evaluate", "retrieval", "--cache", str(cache), "--run", str(runs / "resnet-ae"),
                    "--resamples", "10")
    assert report.startswith("wrote 1 result file(s)") and "resnet-ae" in report
