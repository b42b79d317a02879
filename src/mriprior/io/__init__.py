"""File formats: BART cfl, DICOM, NIfTI, PNG/JPEG, fastMRI HDF5."""
