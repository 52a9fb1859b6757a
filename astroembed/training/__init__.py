"""Training and export [torch]: the AstroCLIP-style encoders (``encoders``), their
ONNX-friendly export form (``export_form``), the two-stage training (``trainer``) and the
export to ONNX with the model contract in the metadata (``export``).

May import: torch, onnx, and everything the runtime may. The only package that imports
torch; nothing outside it imports this package at module level.
"""
