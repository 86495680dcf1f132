"""AssembleNet's connectivity search (ICLR 2020, Sec. 3), distributed on Ray Tune.

`genome` (structures as genomes, validity, dead nodes), `mutations` (connection-learning-
guided, random flips, dilation / split / merge), `evolution` (regularized evolution, random
search, one-shot; no Ray), `searchers` (the Ray Tune `Searcher` and the trial log),
`trial` (train one genome with the package's trainer), `run` (searches, resume, retrain,
comparison), `outputs` (best structure, gin file, picture, plots); the command line is
`python -m official.search` (`__main__`). Guide: docs/search.md.
"""
