"""Figures of the documentation and the README."""
