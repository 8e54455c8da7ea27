"""MGCA's report cleaning, against an independent transcription of the published code, on 3,955 real reports.

`published_caption` below follows holajoa/Adaptor-VL-SSL `dataset/dataset.py`
(`create_path_2_sent_mapping`, lines 87-151, and `get_caption`, lines 153-161) statement by
statement, and the sectioned table as the published pipeline read it: written by `csv.writer`
(MIT-LCP's `create_section_files.py`), read by `pandas.read_csv`, rows with neither section
dropped and the missing one filled with " " (MGCA's `preprocess/mimic_cxr.py`). nltk is not
installed here; its `RegexpTokenizer(r"\\w+").tokenize(s)` is `re.findall(r"\\w+", s)` with the
flags nltk compiles the pattern with (UNICODE | MULTILINE | DOTALL), spelled out below.
"""
import csv
import io
import json
import re

import numpy as np
import pandas
import pytest

from adaptor_vlp.cache_schema import CacheStore, Modality, ProvenanceMismatch
from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, Manifest, ManifestRow, Split, write_manifest
from adaptor_vlp.extract.datasets.mimic_cxr import SectionParser, read_mimic_cxr
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.extract.run import run_extraction
from adaptor_vlp.extract.sources import text_batch
from adaptor_vlp.extract.text_cleaning import TextCleaning, clean_text
from tests.extract.iu_reports import iu_reports, write_mimic_tree


def nltk_regexp_tokenize(text: str) -> list[str]:
    return re.findall(r"\w+", text, flags=re.UNICODE | re.MULTILINE | re.DOTALL)


def published_caption(impression: str, findings: str) -> str | None:
    """The published code's caption of one study, or None where it dropped the study."""
    captions = ""
    captions += impression
    captions += " "
    captions += findings
    captions = captions.replace("\n", " ")
    splitter = re.compile("[0-9]+\\.")
    captions = splitter.split(captions)
    captions = [point.split(".") for point in captions]
    captions = [sent for point in captions for sent in point]
    cnt = 0
    study_sent = []
    for cap in captions:
        if len(cap) == 0:
            continue
        cap = cap.replace("\ufffd\ufffd", " ")
        tokens = nltk_regexp_tokenize(cap.lower())
        if len(tokens) <= 1:
            continue
        included_tokens = []
        for t in tokens:
            t = t.encode("ascii", "ignore").decode("ascii")
            if len(t) > 0:
                included_tokens.append(t)
        if len(included_tokens) > 0:
            study_sent.append(" ".join(included_tokens))
        cnt += len(included_tokens)
    if cnt >= 3:
        series_sents = list(filter(lambda x: x != "", study_sent))
        return " ".join(series_sents)
    return None


def published_captions_of_iu_reports() -> dict[str, str | None]:
    """Study id -> the published caption (None: dropped), through the sectioned CSV as pandas read it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "impression", "findings"])
    for report in iu_reports():
        writer.writerow([report.study_id, report.sections["IMPRESSION"].strip() or None,
                         report.sections["FINDINGS"].strip() or None])
    buffer.seek(0)
    table = pandas.read_csv(buffer, dtype={"study": str})
    kept = table.dropna(subset=["impression", "findings"], how="all").copy()
    kept[["impression"]] = kept[["impression"]].fillna(" ")
    kept[["findings"]] = kept[["findings"]].fillna(" ")
    captions: dict[str, str | None] = {study: None for study in table["study"]}
    for _, row in kept.iterrows():
        captions[row["study"]] = published_caption(row["impression"], row["findings"])
    return captions


@pytest.mark.slow
def test_the_manifest_and_cleaning_give_the_published_caption_of_every_real_iu_report(tmp_path):
    expected = published_captions_of_iu_reports()
    manifest = read_mimic_cxr(write_mimic_tree(tmp_path / "mimic"), section_parser=SectionParser.MIT_LCP)
    studies = manifest.studies()
    batch = text_batch(studies, list(range(len(studies))), TextCleaning.MGCA)
    ours: dict[str, str | None] = {study.study_id: None for study in studies}
    ours.update({studies[row].study_id: text for row, text in zip(batch.rows, batch.texts)})

    assert len(ours) == len(iu_reports()) == 3955
    assert ours == expected
    dropped = [study for study, caption in expected.items() if caption is None]
    without_sections = [report.study_id for report in iu_reports()
                        if not (report.sections["FINDINGS"].strip() or report.sections["IMPRESSION"].strip())]
    assert sorted(dropped) == sorted(without_sections) and len(dropped) == 28
    assert set(batch.failures) == {row for row, study in enumerate(studies) if study.study_id in dropped}


@pytest.mark.parametrize("impression, findings", [
    ("1. No pneumothorax. 2. Stable cardiomegaly.", " "),
    ("Effusion \u2013 r\u00e9solved. \u00dcberall clear", "Heart size normal.\nLungs are clear."),
    ("\u00e9\u00e9 \u00fc. Lines and tubes unchanged.", " "),
    ("Normal", "No change."),
    ("Clear lungs", " "),
    ("No acute process", "The lungs are clear"),
    ("\ufffd\ufffdpleural\ufffd\ufffdeffusion. Right-sided 3.5 cm nodule", " "),
    ("Heart: normal; lungs: 2 small nodules, each < 4mm.", "___ tube in place."),
])
def test_cleaning_equals_the_published_code_on_hard_cases(impression, findings):
    caption = published_caption(impression, findings)
    cleaned = clean_text(impression + " " + findings, TextCleaning.MGCA)
    assert (cleaned.text if cleaned.usable else None) == caption
    assert cleaned.usable or "after MGCA's cleaning" in cleaned.issue


def test_no_cleaning_keeps_the_text():
    assert clean_text("Lungs: clear. No effusion.", TextCleaning.NONE).text == "Lungs: clear. No effusion."


MGCA_REGISTRY = """
[backbones.tiny-bert-mgca]
modality = "text"
source = "transformers"
model_id = "bert"
dim = 32
pooling = "pooler"
random_init_seed = 3
tokenizer_backbone = "minilm"
text_cleaning = "mgca"
[backbones.tiny-bert-mgca.random_text_config]
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 2
intermediate_size = 64
vocab_size = 30522
max_position_embeddings = 128
"""
REPORTS = ["Normal.", "No change.", "Heart size is normal. Lungs are clear.", "1. Stable. 2. No effusion seen."]


@pytest.fixture
def short_reports(tmp_path):
    rows = tuple(ManifestRow(dicom_id=f"d{index}", study_id=f"5000000{index}", subject_id="10000001",
                             split=Split.TRAIN, view="PA", image_path=f"files/d{index}.jpg", report_text=text,
                             report_issue="", labels={name: None for name in CHEXPERT_LABELS})
                 for index, text in enumerate(REPORTS))
    cache = tmp_path / "cache"
    write_manifest(Manifest("reports", tmp_path, tmp_path, rows), cache / "reports")
    registry = tmp_path / "mgca.toml"
    registry.write_text(MGCA_REGISTRY)
    return cache, (registry,)


@pytest.mark.slow
def test_a_study_the_cleaning_leaves_too_short_is_a_failed_sample_with_its_reason(short_reports):
    cache, registry = short_reports
    summary = run_extraction(ExtractionJob(cache, "reports", Modality.TEXT, "tiny-bert-mgca", batch_size=2,
                                           registry=registry))
    store = CacheStore.open(summary.store)
    reasons = {failure.id: failure.reason for failure in store.failures()}
    assert reasons == {
        "50000000": "report unusable: 0 token(s) after MGCA's cleaning; the published code dropped studies with "
                    "fewer than 3",
        "50000001": "report unusable: 2 token(s) after MGCA's cleaning; the published code dropped studies with "
                    "fewer than 3",
    }
    assert store.provenance.preprocessing["text_cleaning"] == "mgca"
    assert np.flatnonzero(store.valid).tolist() == [2, 3]


def test_a_store_written_before_the_cleaning_was_recorded_is_refused_naming_the_field(short_reports):
    cache, registry = short_reports
    job = ExtractionJob(cache, "reports", Modality.TEXT, "tiny-bert-mgca", batch_size=2, registry=registry)
    metadata = run_extraction(job).store / "zarr.json"
    document = json.loads(metadata.read_text())
    del document["attributes"]["adaptor_vlp"]["provenance"]["preprocessing"]["text_cleaning"]
    metadata.write_text(json.dumps(document))
    with pytest.raises(ProvenanceMismatch,
                       match="'preprocessing.text_cleaning' differs: expected 'mgca', found '<absent>'"):
        run_extraction(job)


def test_an_entry_without_cleaning_records_nothing_and_embeds_the_short_reports(short_reports):
    cache, _ = short_reports
    plain = run_extraction(ExtractionJob(cache, "reports", Modality.TEXT, "tiny-bert", batch_size=2))
    store = CacheStore.open(plain.store)
    assert "text_cleaning" not in store.provenance.preprocessing
    assert list(store.failures()) == [] and store.valid.all()
