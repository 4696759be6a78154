"""Models: the SpineNet backbone and task models built on it."""
