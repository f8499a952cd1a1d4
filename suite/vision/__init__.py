"""Image classification: image folders and arrays, augmentation, the Vision Transformer."""
