"""Deployment: exportable graphs of every task, batched RetinaNet post-processing, and the exporters.

``torchspine export`` (`torchspine.deploy.exporter.export_file`) writes ONNX, TorchScript or ``torch.export``
programs of the graphs in `torchspine.deploy.graphs`; `torchspine.deploy.postprocess` holds the detector
post-processing that runs inside those graphs (and on their raw outputs).
"""
