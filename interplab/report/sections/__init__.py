"""Report sections: one module per result family, each turning Results into HTML parts (analyses never import
the report)."""
