"""mtlrobust: adversarial robustness of multi-task dense vision models (Taskonomy)."""

__version__ = "0.1.0"
