"""Runs of their own that compose the stages: contrast studies (which neurons separate two sets
of texts, :mod:`pipeline.contrast`) and interventions on units (:mod:`pipeline.intervene`,
the causal score of a label in :mod:`pipeline.causal`)."""
