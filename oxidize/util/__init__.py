"""Small helpers every step shares, none of them about projections:

* :mod:`.atomic` — write to a temporary name, then rename: a killed build never leaves a
  target that looks done;
* :mod:`.quarantine` — a damaged cache or state file set aside (``damaged/``) rather than
  stopping a build;
* :mod:`.progress` — progress lines on stderr for long work.
"""
