"""Prompts as users write them: weights, BREAK, long prompts and embeddings, encoded per text encoder.

``parse`` turns text into weighted pieces, ``chunks`` into 75-token chunks for one tokenizer,
``encode`` runs one text encoder over them and ``weighting`` applies the weights (two conventions).
"""
