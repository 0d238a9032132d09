"""Name rules shared by the loader and the lenient identity reader. A leaf: imports nothing.

Kept apart from the checks so that client commands can find the daemon's socket without importing
the YAML loader (see `identity`).
"""

# Docker compose's own rule for project names; the name also ends up in socket and state paths.
# An instance name takes the project's place there, so it follows the same rule.
PROJECT_NAME = r"[a-z0-9][a-z0-9_-]*"
PROJECT_NAME_HINT = (
    "a project name (lowercase letters, digits, '-' and '_', starting with a letter or digit)"
)
# Compose service names, and the same rule for stack names (they are typed on the command line).
SERVICE_NAME = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
STACK_NAME = SERVICE_NAME
# Environment variable names; `ports` names become variables, so they follow the same rule.
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# `${NAME}`: a port of the `ports` section, replaced by the instance's allocated port.
PORT_REF = rf"\$\{{({ENV_NAME})\}}"
