"""Trained trials out of trainyard: ONNX files and weaver's preprocessing JSON for CMSSW.

``trial.export_trial`` rebuilds a trial's model from its config and checkpoint;
``onnx_file`` writes it with weaver-core's input names, dynamic axes and softmax output;
``preprocess`` writes the JSON CMSSW's producers read next to it; ``checkpoints`` picks
which checkpoint. Imports: config, data, models, protocol and the worker's checkpoint reader.
"""
