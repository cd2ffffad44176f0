"""Model code: scoring and segmentation, each a pure function or a fit/predict class."""
