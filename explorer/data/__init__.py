"""Data: datasets and their readers, image files, face detection and crops, what a checkpoint's inputs are, the image-feature cache."""
