"""Demo stand-in for a test-time dependency."""

SCORE = 1.0
