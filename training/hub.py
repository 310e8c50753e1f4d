"""Is the Hugging Face Hub reachable? Asked once, so offline runs fail at once.

Without a network, every download through ``huggingface_hub`` retries with back-off for
about a minute before it gives up. One short TCP connection to the hub (or the proxy) tells
us instead; when it fails, ``huggingface_hub`` is switched to offline mode for this process,
so weights already in the local cache still load and missing ones fail immediately.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 3.0


def _target() -> tuple[str, int]:
    """``(host, port)`` a hub request would connect to first (the proxy, if one is set)."""
    from huggingface_hub import constants

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_online(timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """True when the hub (or the configured proxy) accepts a TCP connection.

    Also False when offline mode is already set (``HF_HUB_OFFLINE=1``); when the check fails,
    offline mode is switched on for the rest of this process.
    """
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    try:
        with socket.create_connection(_target(), timeout=timeout_s):
            return True
    except OSError:
        constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub/transformers
        os.environ["HF_HUB_OFFLINE"] = "1"  # and by child processes
        return False
