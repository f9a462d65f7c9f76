"""Ops: console users and auth, audit log, analytics, content gaps, metrics, backup and runtime settings."""
