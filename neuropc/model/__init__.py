"""The model description: networks of populations and connections, activations, and the energy (the
single specification every backend is tested against)."""
