"""Spot through the real ``bosdyn-client``: the adapter, its config and the SDK conversions."""
