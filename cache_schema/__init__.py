"""The cache's on-disk format, owned in one place: every other package reads and writes stores through it."""
from adaptor_vlp.cache_schema.arrays import FeatureShape, ShardSpan
from adaptor_vlp.cache_schema.inventory import store_summary
from adaptor_vlp.cache_schema.layout import ArrayName, Modality, dataset_dir, segmentation_store_path, store_path
from adaptor_vlp.cache_schema.lock import FolderLock, FolderLocked
from adaptor_vlp.cache_schema.markers import Failure
from adaptor_vlp.cache_schema.provenance import IncompleteProvenance, Provenance, ProvenanceMismatch
from adaptor_vlp.cache_schema.repair import repair_store
from adaptor_vlp.cache_schema.store import CacheStore, DamagedStore, StoreError
from adaptor_vlp.cache_schema.verify import VerifyReport, require_finite, verify_store
from adaptor_vlp.cache_schema.writes import WriteFailed

__all__ = [
    "ArrayName",
    "CacheStore",
    "DamagedStore",
    "Failure",
    "FeatureShape",
    "FolderLock",
    "FolderLocked",
    "IncompleteProvenance",
    "Modality",
    "Provenance",
    "ProvenanceMismatch",
    "ShardSpan",
    "StoreError",
    "VerifyReport",
    "dataset_dir",
    "repair_store",
    "require_finite",
    "segmentation_store_path",
    "store_path",
    "store_summary",
    "verify_store",
    "WriteFailed",
]
