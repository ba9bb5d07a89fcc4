"""Interfaces: the Python API, the command line and the HTTP server."""
