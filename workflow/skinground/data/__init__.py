"""The data stage: SLICE-3D's metadata and images, the manifest, the patient split, the
training tuples and their answers, and how a split is cut into shards."""
