"""Recipes, layouts and volume formatters: the localisation contexts."""
