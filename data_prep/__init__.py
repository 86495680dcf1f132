"""Offline preparation: TFDS builders for Charades and Toyota Smarthome, object maps, the
built-in synthetic dataset. Importing the package registers the builders with TFDS."""

from data_prep import charades  # Registers `charades`.
from data_prep import toyota_smarthome  # Registers `toyota_smarthome`.
