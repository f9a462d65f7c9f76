"""Routers: the public chat API, the widget and its config, live events, knowledge uploads, health, and the console's pages and JSON."""
