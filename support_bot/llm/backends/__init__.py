"""Generation backends: each imports only the engine base; the registry picks one by settings."""
