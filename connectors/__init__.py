"""Source protocols: each module reads one kind of source and yields pages of raw records.

Connectors know protocols and payload shapes, never the warehouse (see DESIGN.md).
"""
