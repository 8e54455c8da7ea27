"""adaptor-vlp: a vision-language Adaptor pre-trained on frozen backbones from a sharded embedding cache.

The four stages install under this one namespace (`adaptor_vlp.extract`, `adaptor_vlp.train`,
`adaptor_vlp.evaluate`, `adaptor_vlp.cache_schema`) although their folders sit at the top of the
repository: generic top-level names such as `evaluate` belong to other PyPI packages.
"""
