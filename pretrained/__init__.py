"""Bundled models, shipped as package data of ``gatesum.pretrained`` (no code lives here)."""
