"""Export a trained policy to a policy bundle that ``theia_ros.runtime`` runs on any backend.

See ``bundle_writer`` (the steps), ``onnx_export`` (exporter/opset choice), ``parity`` (the
self-check) and ``theia_ros.runtime.bundle`` (the format).
"""

from training.export.bundle_writer import ExportOptions, export_bundle
from training.export.parity import TOLERANCE, ParityError, ParityResult

__all__ = ["TOLERANCE", "ExportOptions", "ParityError", "ParityResult", "export_bundle"]
