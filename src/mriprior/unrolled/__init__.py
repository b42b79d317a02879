"""Unrolled reconstruction networks (VarNet, MoDL) trained on synthesised k-space."""

from mriprior.unrolled.networks import MoDL, UNet, VarNet, build_network
from mriprior.unrolled.synth import Synthesizer, make_mask
from mriprior.unrolled.train import (load_network, load_unrolled_config, save_network,
                                     train_unrolled, validate_unrolled_config)

__all__ = ["MoDL", "UNet", "VarNet", "build_network", "Synthesizer", "make_mask",
           "load_network", "load_unrolled_config", "save_network", "train_unrolled",
           "validate_unrolled_config"]
