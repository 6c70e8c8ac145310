"""Reports: HTML and text views of runs and checker results."""
