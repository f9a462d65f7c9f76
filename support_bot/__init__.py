"""support-bot: a self-hosted, retrieval-augmented customer-support assistant."""

__version__ = "0.1.0"
