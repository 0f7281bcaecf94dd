"""Writing datasets: the RLDS schema, the TFDS builder base, normalisation statistics, the build CLI."""
