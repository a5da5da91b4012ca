"""siegecraft: collaborative ML training and its security, in one framework."""

__version__ = "0.1.0"
