"""On disk: the safetensors checkpoint format, resume states, the app's checkpoint library, the ONNX export and the import of reference runs."""
