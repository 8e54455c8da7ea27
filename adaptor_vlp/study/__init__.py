"""The study runner: a whole study (extract, train, evaluate, compare with published numbers) from one spec file.

It sits above the stages and calls their public functions; it decides what is done from the
stores' and runs' own records and owns no on-disk format of its own (its log is for the report's
cost table only). `adaptor study plan|run|report SPEC` is its command line.
"""
