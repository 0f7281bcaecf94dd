"""Serving a trained policy to a robot: `python -m vam.serve` (server.py, JAX) and a light client (client.py,
numpy + msgpack + websockets only) speaking the protocol of wire.py."""
