"""FastAPI adapter over support_bot: widget API, knowledge API, health and pages."""
