"""Real-image inputs: files, folders and ImageNet val, preprocessed the way DiG-IN prepares images for SD."""

from digin_cli.data.images import IMAGE_EXTENSIONS, InputImage, load_inputs, preprocess, short_side

__all__ = ["IMAGE_EXTENSIONS", "InputImage", "load_inputs", "preprocess", "short_side"]
