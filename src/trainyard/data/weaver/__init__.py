"""weaver-core data configs: parse them, evaluate their expressions, build weaver's arrays.

types.py        the config as typed, frozen dataclasses (WeaverDataConfig and its parts)
fields.py       value checks and section parsers that collect every problem
parser.py       YAML / mapping -> WeaverDataConfig (load_weaver_config, parse_weaver_config)
writer.py       WeaverDataConfig -> weaver's YAML, and where weaver keeps *.auto.yaml files
columns.py      awkward columns as numpy: flat values, one value per event, padded lists
expressions.py  weaver's expression language and its helper functions
preprocess.py   standardise, clip and pad input groups; auto standardisation
weights.py      weaver's histogram reweighting
pipeline.py     files + config -> weaver's arrays (load_arrays, build_arrays, prepare_config)
"""
