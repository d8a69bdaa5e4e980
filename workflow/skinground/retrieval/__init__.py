"""The retrieval stage: the merged embedding spaces, their FAISS indexes, the methods'
searches, and ``skinground query``."""
