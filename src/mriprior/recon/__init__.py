"""Reconstruction: solvers, classical regularisers and PICS."""
