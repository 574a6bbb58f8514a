"""The napari layer: dock widgets, reader/writer, sample data. Thin shells over the compute API."""
