"""The ``torchspine`` command line."""
