"""Image batches: decoded by worker processes or by threads, the same batches either way; one decode for many
backbones."""
import torch

from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.image_transforms import DecodeSize
from adaptor_vlp.extract.sources import Decoders, ImageBatch, ImagePassRows, ImageRows, image_batches
from tests.extract.conftest import CORRUPT_ROW, MISSING_ROW

BATCHES = [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9], [10, 11]]


def _batches(tiny_dataset, decoders: int, kind: Decoders) -> list[ImageBatch]:
    _, manifest = tiny_dataset
    dataset = ImageRows(manifest.rows, manifest.image_root, get_spec("tiny-vit"), views=2)
    return list(image_batches(dataset, BATCHES, decoders, kind, pin_memory=False))


def test_threads_decode_the_same_batches_in_the_same_order_as_worker_processes(tiny_dataset) -> None:
    by_processes = _batches(tiny_dataset, 2, Decoders.PROCESSES)
    for threads in (1, 3):
        by_threads = _batches(tiny_dataset, threads, Decoders.THREADS)
        assert [b.rows for b in by_threads] == [[0, 1, 2], [4], [5, 6, 8], [9], [10, 11]]
        assert set(by_threads[1].failures) == {MISSING_ROW} and set(by_threads[2].failures) == {CORRUPT_ROW}
        assert all(torch.equal(t.pixels, p.pixels) and torch.equal(t.views, p.views) and t.failures == p.failures
                   for t, p in zip(by_threads, by_processes, strict=True))


def test_a_pass_gives_each_backbone_the_batches_its_own_rows_give_at_the_same_decode_size(tiny_dataset) -> None:
    _, manifest = tiny_dataset
    specs = [get_spec("tiny-vit"), get_spec("resnet18-random")]
    decode = DecodeSize(224)
    one_pass = ImagePassRows(manifest.rows, manifest.image_root, specs, views=2, decode=decode)
    by_threads = list(image_batches(one_pass, BATCHES, 2, Decoders.THREADS, pin_memory=False))
    by_processes = list(image_batches(one_pass, BATCHES, 2, Decoders.PROCESSES, pin_memory=False))
    for position, spec in enumerate(specs):
        alone = list(image_batches(ImageRows(manifest.rows, manifest.image_root, spec, views=2, decode=decode),
                                   BATCHES, 0, Decoders.PROCESSES, pin_memory=False))
        for batches in (by_threads, by_processes):
            assert all(torch.equal(b[position].pixels, a.pixels) and torch.equal(b[position].views, a.views)
                       and b[position].rows == a.rows and b[position].failures == a.failures
                       for b, a in zip(batches, alone, strict=True)), spec.name
    assert by_threads[0][1].pixels.shape[-1] == 224 and by_threads[0][0].pixels.shape[-1] == 64
