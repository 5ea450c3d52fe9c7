"""Prediction from image features: rank prototypes, the distribution summaries every method's output
goes through, uploaded images to distributions, and the torch-free ONNX runtime path."""
