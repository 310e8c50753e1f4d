"""Distilling Theia: teachers, resize-once image shards, feature statistics, the bf16 feature
cache, the batch loader, the Eq. 1 loss and the resumable DDP trainer.

Pipeline (``theia distill --help``): ``prepare`` (images.py) -> ``stats`` (stats.py) ->
``extract`` (cache.py, optional) -> ``train`` (trainer.py, config.py, loader.py, loss.py);
teachers.py builds the teacher models.
"""
