"""Tests of siegecraft.models (a package, so module names cannot clash with other test folders)."""
