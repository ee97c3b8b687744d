"""Readers of raw data. Each yields `Sample`s; `prepare` turns them into the prepared format."""

from cnnlab.data.sources.base import Sample, Source

__all__ = ["Sample", "Source"]
