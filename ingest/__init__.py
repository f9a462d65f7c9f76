"""Ingestion: loaders (one per format), chunking, the Celery-free pipeline, and the workers that run it."""
