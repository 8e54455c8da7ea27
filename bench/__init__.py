"""Benchmarks: each measures a stage against its limits and its alternatives, side by side in one run.

`python -m bench.extract` (pipeline vs forward vs decode, draft JPEG decoding),
`python -m bench.cache_formats` (the cache store vs npy and HDF5) and `python -m bench.train`
(training from the cache vs backbones live); their figures and commands are in BENCHMARKS.md.
"""
