"""Live: the event bus (in-process or Redis pub/sub) and the per-conversation and console feeds."""
