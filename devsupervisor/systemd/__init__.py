"""systemd integration: the notify protocol and the user unit."""
