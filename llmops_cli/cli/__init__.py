"""Thin Typer layer: parse arguments, load the config, call the core, render the result."""
