"""The extract stage: dataset readers, the backbone registry, and frozen backbones run once into the cache."""
