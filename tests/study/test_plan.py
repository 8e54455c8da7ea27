"""Planning: steps in dependency order, and `plan` on a cache holding only some of the paper's stores."""
import shutil
from pathlib import Path

import numpy as np
from huggingface_hub import constants as hub_constants
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance, dataset_dir, store_path
from adaptor_vlp.cache_schema.manifest import (
    CHEXPERT_LABELS,
    Manifest,
    ManifestRow,
    Split,
    manifest_sha256,
    read_manifest,
    write_manifest,
)
from adaptor_vlp.cli import app
from adaptor_vlp.study.plan import plan_study
from adaptor_vlp.study.spec import load_spec
from adaptor_vlp.study.steps import ExtractStep, HeadStep, Status, StepKind, TrainStep
from tests.study.conftest import write_spec

REPOSITORY = Path(__file__).resolve().parents[2]
PAPER_MIMIC_ROOT = Path("data/mimic-cxr-jpg/2.0.0")


def test_every_step_comes_after_the_steps_it_depends_on(demo_trees, tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path, demo_trees, image=("tiny-vit", "tiny-resnet"))))
    position = {step.key: index for index, step in enumerate(plan.steps)}
    assert len(position) == len(plan.steps)
    for step in plan.steps:
        assert all(position[key] < position[step.key] for key in step.depends_on), step.key
    kinds = [step.kind for step in plan.steps]
    assert kinds == sorted(kinds, key=list(StepKind).index)
    heads = [step for step in plan.steps if isinstance(step, HeadStep)]
    assert len(heads) == 4 * 2 * 2 * 2  # tasks x image backbones x (one text + baseline) x fractions
    baseline = next(step for step in heads if step.text is None)
    assert baseline.depends_on == (f"extract image {baseline.vision} on {baseline.task.dataset}",)
    tokens = {step.job.dataset: step.job.tokens for step in plan.steps if isinstance(step, ExtractStep)
              and step.job.backbone == "tiny-vit"}
    assert tokens == {"mimic-cxr": False, "rsna": True, "covidx": False, "siim": True}


def test_a_left_out_cell_has_no_step_and_its_store_only_what_other_tasks_need(demo_trees, tmp_path):
    tasks = {"siim-segmentation": 'dataset = "siim"\nkind = "segment"\nmetric = "dice-positive"\n'
                                  'left_out = [{ image = "tiny-resnet", reason = "not cached" }]'}
    plan = plan_study(load_spec(write_spec(tmp_path, demo_trees, tasks=tasks, image=("tiny-vit", "tiny-resnet"))))
    keys = [step.key for step in plan.steps]
    assert not any("tiny-resnet" in key and ("siim" in key) for key in keys)
    assert [(cell.task, cell.image, cell.reason) for cell in plan.left_out] == [
        ("siim-segmentation", "tiny-resnet", "not cached")]


def _store(cache: Path, modality: Modality, backbone: str, ids: list[str], groups: list[str], splits: list[str],
           preprocessing: dict | None = None):
    provenance = Provenance(dataset="mimic-cxr", manifest_sha256=manifest_sha256(dataset_dir(cache, "mimic-cxr")),
                            modality=modality, backbone=backbone, weights_id=backbone, weights_sha256="c" * 64,
                            preprocessing=preprocessing or {}, pooling="cls")
    store = CacheStore.create(store_path(cache, "mimic-cxr", modality, backbone), provenance, ids, groups, splits,
                              FeatureShape(8))
    for span in store.shards():
        store.write_shard(span.index, {ArrayName.EMBEDDING: np.ones((span.stop - span.start, 8), dtype=np.float32)})


def test_plan_on_a_cache_with_some_of_the_papers_stores_lists_what_is_missing(tmp_path, monkeypatch):
    """The cache holds the MIMIC-CXR manifest and the dinov2-s and bert stores, nothing else; no weights are here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # torchxrayvision's weights folder, empty
    PAPER_MIMIC_ROOT.mkdir(parents=True)
    cache = tmp_path / "cache"
    rows = tuple(ManifestRow(dicom_id=f"d{index}", study_id=f"s{index}", subject_id=f"p{index}",
                             split=(Split.TRAIN, Split.VALIDATE, Split.TEST)[index % 3], view="PA",
                             image_path=f"files/d{index}.jpg", report_text="Clear lungs.", report_issue="",
                             labels={name: None for name in CHEXPERT_LABELS}) for index in range(6))
    paper_reading = {"merge_validate_test": True, "section_parser": "mit-lcp"}  # studies/paper.toml's [pretraining]
    write_manifest(Manifest("mimic-cxr", PAPER_MIMIC_ROOT.resolve(), PAPER_MIMIC_ROOT.resolve(), rows, paper_reading),
                   dataset_dir(cache, "mimic-cxr"))
    ids, splits = [row.dicom_id for row in rows], [row.split.value for row in rows]
    _store(cache, Modality.IMAGE, "dinov2-s", ids, [row.study_id for row in rows], splits)
    studies = [row.study_id for row in rows]
    _store(cache, Modality.TEXT, "bert", studies, studies, splits, preprocessing={"text_cleaning": "mgca"})
    _store(cache, Modality.TEXT, "biobert", studies, studies, splits)  # made before the paper's text was cleaned
    shutil.copy(REPOSITORY / "studies" / "paper.toml", tmp_path / "paper.toml")

    plan = plan_study(load_spec(tmp_path / "paper.toml").with_paths(cache=cache))
    states = plan.states()
    done = {key for key, state in states.items() if state.status is Status.DONE}
    assert done == {"manifest mimic-cxr", "extract image dinov2-s on mimic-cxr", "extract text bert on mimic-cxr"}
    assert states["train dinov2-s+bert"].status is Status.PENDING
    assert "Put torchxrayvision's weights file at " in states["extract image resnet-ae on mimic-cxr"].detail
    assert "vit_base_patch14_dinov2.lvd142m" in states["extract image dinov2-b on mimic-cxr"].detail
    assert "huggingface-cli download" in states["extract text clinicalbert on mimic-cxr"].detail
    assert states["extract text biobert on mimic-cxr"].status is Status.BLOCKED
    assert "records preprocessing.text_cleaning = None, backbone 'biobert' asks for 'mgca'; rebuild it: " \
           "adaptor extract texts" in states["extract text biobert on mimic-cxr"].detail
    assert "data missing: data/rsna-pneumonia" in states["manifest rsna-published-classify"].detail
    assert states["train dinov2-b+bert"].status is Status.BLOCKED
    assert states["train resnet-ae+bert"].detail.startswith(
        "needs extract image resnet-ae on mimic-cxr, which cannot run: weights for backbone 'resnet-ae'")
    trains = [step for step in plan.steps if isinstance(step, TrainStep)]
    # 3 image x 5 text backbones, and CXR-BERT as the published code embedded it (its rows under `published`)
    assert len(trains) == 3 * (5 + 1) and len(plan.left_out) == 0
    views = 2  # studies/paper.toml: two augmented views per segmentation image
    seeds = 1 + 3  # published: one seed; corrected: three
    assert sum(isinstance(step, HeadStep) for step in plan.steps) == 4 * 3 * 6 * 3 * seeds
    jobs = {step.key: step.job for step in plan.steps if isinstance(step, ExtractStep)}
    for dataset, size in (("siim-published", 896), ("rsna-published-segment", 224), ("rsna-corrected", 224)):
        # segmentation reads the whole image at the protocol's size, in stores of their own, each with its views:
        # the U-Net reads ResNet-AE's maps, the DINOv2 decoders read patch tokens
        for view in range(views + 1):
            suffix = f" at {size} px" + (f" view {view}" if view else "")
            resnet = jobs[f"extract image resnet-ae on {dataset}{suffix}"]
            dinov2 = jobs[f"extract image dinov2-s on {dataset}{suffix}"]
            assert (resnet.feature_maps, dinov2.feature_maps, dinov2.tokens) == (True, False, True)
            assert (resnet.segmentation_size, dinov2.segmentation_view) == (size, view)
            assert dinov2.store.name == f"dinov2-s.seg{size}{f'.view{view}' if view else ''}.zarr"
    assert not jobs["extract image resnet-ae on covidx-published"].feature_maps
    classification = jobs["extract image dinov2-s on rsna-corrected"]   # RSNA classification: the plain store
    assert (classification.segmentation_size, classification.tokens, classification.store.name) == (
        None, False, "dinov2-s.zarr")
    heads = [step for step in plan.steps if isinstance(step, HeadStep) and step.task.name.startswith("siim")]
    assert all(f"extract image {step.vision} on {step.task.dataset} at 896 px view {views}" in step.depends_on
               for step in heads)

    result = CliRunner().invoke(app, ["study", "plan", "paper.toml", "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert f"{len(plan.steps)} steps: 3 done, " in result.output
    lines = result.output.splitlines()
    for step in plan.steps:
        if step.key not in done:
            assert any(line.split(":", 1)[0].endswith(step.key) for line in lines), step.key
    assert "needs weights: dinov2-b: vit_base_patch14_dinov2.lvd142m, from the Hugging Face hub repository " \
           "timm/vit_base_patch14_dinov2.lvd142m, read from the local cache (not on this machine)" in result.output
    assert "needs weights: resnet-ae: 101-elastic, torchxrayvision's weights file " in result.output
    assert "needs data: RSNA Pneumonia Detection Challenge (Kaggle): stage_2_train_labels.csv" in result.output
    assert "0 task x image backbone cells left out by the spec" in result.output



def test_a_manifest_read_with_other_reader_options_than_the_spec_asks_is_blocked_naming_the_option(demo_trees,
                                                                                                 tmp_path):
    spec_path = write_spec(tmp_path, demo_trees)
    plan = plan_study(load_spec(spec_path))
    manifest_step = next(step for step in plan.steps if step.kind is StepKind.MANIFEST)
    manifest_step.execute("")
    assert manifest_step.state().status is Status.DONE

    text = spec_path.read_text().replace("[pretraining]\n", "[pretraining]\nmerge_validate_test = true\n"
                                                          "section_parser = \"mit-lcp\"\n")
    spec_path.write_text(text)
    paper_reading = plan_study(load_spec(spec_path)).steps[0]
    assert paper_reading.dataset.merge_validate_test and paper_reading.dataset.section_parser.value == "mit-lcp"
    state = paper_reading.state()
    assert state.status is Status.BLOCKED
    assert "read with merge_validate_test = False, the spec asks for True" in state.detail

    assert read_manifest(paper_reading.folder).split_counts()["test"] > 0
    paper_reading.folder.rename(tmp_path / "old-manifest")
    paper_reading.execute("")
    assert paper_reading.state().status is Status.DONE
    manifest = read_manifest(paper_reading.folder)
    assert manifest.split_counts()["test"] == 0 and manifest.options["section_parser"] == "mit-lcp"
