"""Data: readers per source format, the prepared format, augmentation, the DataModule."""
