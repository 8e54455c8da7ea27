"""The cache's on-disk format, owned in one place: every other package reads and writes stores through it."""
from adaptor_vlp.cache_schema.layout import ArrayName, Modality, dataset_dir, store_path
from adaptor_vlp.cache_schema.provenance import IncompleteProvenance, Provenance, ProvenanceMismatch
from adaptor_vlp.cache_schema.store import CacheStore, FeatureShape, Failure, ShardSpan, StoreError
from adaptor_vlp.cache_schema.verify import VerifyReport, require_finite, store_summary, verify_store

__all__ = [
    "ArrayName",
    "CacheStore",
    "Failure",
    "FeatureShape",
    "IncompleteProvenance",
    "Modality",
    "Provenance",
    "ProvenanceMismatch",
    "ShardSpan",
    "StoreError",
    "VerifyReport",
    "dataset_dir",
    "require_finite",
    "store_path",
    "store_summary",
    "verify_store",
]
