"""Examples of using the harness with systems of your own."""
