"""devsup: supervises a local development stack for a Go microservice platform."""

__version__ = "0.1.0"
