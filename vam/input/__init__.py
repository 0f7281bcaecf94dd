"""The grain input pipeline: TFDS episodes -> windows -> normalised unified actions -> mixture -> batches."""
