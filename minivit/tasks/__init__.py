"""Training tasks other than the ViT classifier (which is `minivit.train.Classify`, the loop's default).

A task is what differs between runs of the one loop in minivit/train.py: which model it builds, how a
batch becomes a loss and gradients, how it is evaluated, and what else a checkpoint must carry. See
`minivit.train.Classify` for the attributes every task has.
"""
