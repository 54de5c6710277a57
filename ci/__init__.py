"""The SGLang AMD CI toolkit: config, planning, images, containers, stages and reports.

Modules are layered: pure config/domain logic at the bottom, Docker and process adapters
above it, and `ci.cli` (called by tasks.py and noxfile.py) on top.
"""
