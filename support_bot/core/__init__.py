"""Core: settings, domain errors, the database session, logging and security helpers. Imports nothing else of support_bot."""
