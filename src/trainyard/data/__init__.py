"""HEP jet data, from files to training batches, in three layers that import downward only.

    reader.py, batch.py   leaves: files (Parquet, ROOT, HDF5) into tables; the JetBatch type
    features.py           the built-in ParticleNet inputs from our jet schema
    weaver/               weaver-core data configs: types, parser, expressions, preprocessing,
                          weights, and the pipeline that turns files + config into arrays
    staged/               the staging cache (shards on disk, keyed by their inputs) and the
                          memory-mapped, resumable loader; stages what features/ or weaver/ make
    model_inputs.py       which staged arrays feed the model (preflight and worker share it)

weaver/ never imports staged/; tests/data/test_layering.py checks that and that no module
imports another in a circle.
"""
