"""keras_ssm: signed supermasks for Keras 3 (placeholder while the core lands)."""

__version__ = "0.1.0"
