"""The code that runs inside each trial process."""
