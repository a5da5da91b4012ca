"""Tests of siegecraft.core.models (a package, so module names cannot clash with other test folders)."""
