"""GENERATE: prompt templates and the training sheet of rendered prompt/response pairs."""
