"""Audio input/output and the mel front end."""
