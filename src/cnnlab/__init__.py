"""cnnlab: classic CNNs on classification, localisation and FCN segmentation, reproducibly."""

__version__ = "0.1.0"
