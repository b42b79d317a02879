"""Generative image priors: noise-conditional score networks (:mod:`mriprior.priors.networks`)
and the explicit-likelihood PixelCNN++ (:mod:`mriprior.priors.pixelcnn`)."""
