"""vam: video-action models for robots, pretrained on simulated robot and human-hand data."""

__version__ = "0.1.0"
