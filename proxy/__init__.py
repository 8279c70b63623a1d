"""profilo: an OpenAI-compatible chat proxy that remembers each end user."""

__version__ = "0.1.0"
