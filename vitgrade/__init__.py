"""vitgrade: an autograder for the Vision Transformer homework (HW4, NYU Deep Learning)."""

__version__ = "0.1.0"
