"""Inference backends: one module per runtime, all behind ``InferenceBackend``."""

from __future__ import annotations

from recognizer.backends.base import BackendOptions, InferenceBackend, zero_feeds

__all__ = ["BackendOptions", "InferenceBackend", "zero_feeds"]
