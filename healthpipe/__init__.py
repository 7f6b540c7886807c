"""healthpipe: a DHIS2-style health information and surveillance pipeline.

The work lives in two top-level packages: ``connectors`` (source protocols) and
``pipelines`` (the warehouse, validation, transformation and the command line).
"""

__version__ = "0.1.0"
