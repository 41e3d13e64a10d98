"""Training losses, one per file; this package only re-exports them."""

from oxidize.losses.in_batch import InBatchLoss
from oxidize.losses.triplet import TripletLoss

__all__ = ["InBatchLoss", "TripletLoss"]
