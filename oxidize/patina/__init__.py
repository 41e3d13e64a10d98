"""patina's side of the interface: the files its ``scry`` loads, in its formats and key schemes.

oxidize replaces patina's Oxidize phase. A projection is only useful to a patina user once it
sits where patina looks, as patina reads it (``../shared/PATINA.md`` has the facts, from
patina's source at ``acb8b69``):

* :mod:`oxidize.patina.population` — what patina indexes for a projection name, with patina's
  keys and texts, read from patina's database by patina's SQL;
* :mod:`oxidize.patina.weights` — oxidize's weights folded into patina's ``mlp-2layer``
  tensors (the linear path becomes ``2 · in`` extra hidden units, exactly);
* :mod:`oxidize.patina.export` — the export step: decide whether the projection beats the raw
  embedding, embed the population as patina embeds its queries, write both files atomically.

Only the export task imports these modules.
"""
