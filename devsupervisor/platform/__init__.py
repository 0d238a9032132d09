"""The platform: one interface (`target.PlatformTarget`) over the host binary and the compose
container, and the supervisor that builds, swaps and restarts whichever one is active."""
