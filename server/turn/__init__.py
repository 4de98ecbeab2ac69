"""Turn taking: when a user's turn is over (`endpoint`), and the turn-completion models that help decide it."""
