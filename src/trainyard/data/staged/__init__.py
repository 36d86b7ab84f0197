"""Staged data: preprocessed arrays written once as memory-mappable shards, read every epoch.

dataset.py   the on-disk format and the validated StagedDataset handle
shards.py    writing chunks of fixed-shape arrays into shard files
staging.py   stage(): the cache folder per key, locks, atomic rename, disk-space checks
sources.py   what gets staged: the built-in ParticleNet inputs or a weaver data config
readers.py   turning jet indices into JetBatches (memory maps, or kvikio into GPU memory)
prefetch.py  a bounded background producer
loader.py    StagedLoader: shuffled, rank-split, resumable batches
"""
