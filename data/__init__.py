"""TFDS dataset builders, one folder per dataset (`data/<name>/<name>_dataset_builder.py`)."""
