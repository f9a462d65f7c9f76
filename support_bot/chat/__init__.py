"""Chat: one customer turn as named steps (remember, retrieve, decide, generate, ground, store) and the message store."""
