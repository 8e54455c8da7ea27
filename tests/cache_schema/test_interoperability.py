"""The store is plain Zarr v3: TensorStore, an independent implementation, reads it."""
import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName, CacheStore
from adaptor_vlp.cache_schema.ids import decode_ids

tensorstore = pytest.importorskip("tensorstore")


def _open_with_tensorstore(store: CacheStore, name: ArrayName) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store.path / name.value)}}
    return tensorstore.open(spec, read=True).result().read().result()


def test_tensorstore_reads_embeddings_tokens_ids_and_mask(full_store: CacheStore) -> None:
    for name in (ArrayName.EMBEDDING, ArrayName.TOKENS, ArrayName.VIEWS, ArrayName.VALID, ArrayName.SPLIT):
        np.testing.assert_array_equal(_open_with_tensorstore(full_store, name), full_store.read(name))
    assert list(decode_ids(_open_with_tensorstore(full_store, ArrayName.ID))) == list(full_store.ids)
