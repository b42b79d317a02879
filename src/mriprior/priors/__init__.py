"""Generative image priors: noise-conditional score networks (:mod:`mriprior.priors.networks`)."""
