"""Recording activity to HDF5, reading it back, and exporting it (NWB, SONATA)."""
