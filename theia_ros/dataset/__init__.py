"""Demonstration datasets in the LeRobot v3.0 layout: a crash-safe writer and a reader.

Torch-free (pyarrow + PyAV + numpy) so robot recorders in ``theia_ros`` can use it.
See ``writer.py`` for the recording API and crash-safety scheme, ``layout.py`` for the
files on disk.
"""

from theia_ros.dataset.layout import (
    ACTION_KEY,
    EE_POSE_KEY,
    STATE_KEY,
    image_key,
)
from theia_ros.dataset.reader import EpisodeDataset, EpisodeInfo
from theia_ros.dataset.video import VideoSettings
from theia_ros.dataset.writer import DatasetWriter

__all__ = [
    "ACTION_KEY",
    "EE_POSE_KEY",
    "STATE_KEY",
    "DatasetWriter",
    "EpisodeDataset",
    "EpisodeInfo",
    "VideoSettings",
    "image_key",
]
