"""Prompt enrichment with style presets."""
