"""Middleware: CORS and rate limits on the public chat API, and request ids, access logs and latency metrics."""
