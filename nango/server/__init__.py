"""Server: the control plane (environments, keys, integrations, connections and credentials, connect
sessions, function configs, webhook settings) and the public aiohttp gateway in front of it."""
