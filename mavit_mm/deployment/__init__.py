"""Exporting MAViT models for deployment (ONNX through torch's exporter)."""
from .onnx_export import export_onnx, exportable_module

__all__ = ['export_onnx', 'exportable_module']
