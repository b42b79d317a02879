"""mriprior: MRI reconstruction with generative image priors, in PyTorch.

Data flow (imports point one way): io -> physics -> data -> priors -> recon / augment
-> experiments -> cli. See docs/design.md.
"""

__version__ = "0.1.0"

from mriprior.errors import MriPriorError, InputError  # noqa: E402,F401
