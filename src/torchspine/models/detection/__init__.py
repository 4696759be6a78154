"""Detection heads and detectors on SpineNet."""
