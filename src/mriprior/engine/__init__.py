"""The training engine every trainable model shares: score and PixelCNN++ priors
(:mod:`mriprior.priors.train`), unrolled networks (:mod:`mriprior.unrolled.train`) and the phase
GAN (:mod:`mriprior.priors.gan_train`).

* :mod:`~mriprior.engine.dist`: process group, rank, device (``torchrun``: ``gloo`` on CPU,
  ``nccl`` on CUDA) and the run folder's lock.
* :mod:`~mriprior.engine.checkpoints`: ``checkpoints/ckpt-SSSSSSSS.pt`` files, written atomically,
  read with ``torch.load(weights_only=True)``; the resume point and its checks; RNG states.
* :mod:`~mriprior.engine.logger`: ``log.jsonl`` (its killed tail dropped on resume) and
  TensorBoard when installed.
* :mod:`~mriprior.engine.loop`: the one training loop (log, held-out evaluation and checkpoint
  steps, ``stop_at`` for resume tests) around a model-specific ``step`` hook; LR schedule,
  the AMP optimiser step, the run folder, loader and held-out images, weight hashes.

A trainer supplies the hooks (one optimisation step, evaluate, save) and its checkpoint's
content; the engine owns everything else.
"""

from mriprior.engine.checkpoints import (  # noqa: F401
    latest_checkpoint, list_checkpoints, newest_readable_checkpoint, read_checkpoint,
    write_checkpoint, save_checkpoint, save_run_checkpoint, resume_point, rng_state,
    set_rng_state,
)
from mriprior.engine.dist import Dist, rank0_lock, run_ranked  # noqa: F401
from mriprior.engine.logger import Logger, check_tensorboard  # noqa: F401
from mriprior.engine.loop import (  # noqa: F401
    Hooks, git_revision, heldout_images, lr_factor, make_optimizer, optimiser_step,
    prepare_run_dir, run_loop, state_sha256, training_loader,
)

__all__ = ["latest_checkpoint", "list_checkpoints", "newest_readable_checkpoint",
           "read_checkpoint", "write_checkpoint", "save_checkpoint", "save_run_checkpoint",
           "resume_point", "rng_state", "set_rng_state", "Dist", "rank0_lock", "run_ranked",
           "Logger", "check_tensorboard", "Hooks", "git_revision", "heldout_images",
           "lr_factor", "make_optimizer", "optimiser_step", "prepare_run_dir", "run_loop",
           "state_sha256", "training_loader"]
