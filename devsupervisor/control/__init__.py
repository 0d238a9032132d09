"""The Unix-socket control interface: protocol, server, client and the command table."""
