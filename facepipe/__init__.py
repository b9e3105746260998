"""facepipe: facial keypoints and emotion recognition at cluster scale, on Ray."""
__version__ = "0.1.0"
