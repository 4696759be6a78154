"""Engine: running detectors over data sets and image folders.

``evaluation`` turns torchvision-style detector outputs into COCO results and scores them with pycocotools;
``predict`` runs a detector over image files and writes a JSON file plus one drawn PNG per image. Both are
plain functions over a model and its inputs, so the CLI, notebooks and training hooks share one implementation.
"""
