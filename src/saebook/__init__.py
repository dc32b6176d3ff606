"""saebook: the companion package of the SAE interpretability book.

Chapters start with ``profile = saebook.setup()`` and then call the technique modules
(``metrics``, ``induction``, ``groundtruth``, ...) on the profile's model and SAEs.
Importing ``saebook`` itself is light: ``setup`` loads torch and SAELens on first use.
"""

__all__ = ["setup"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "setup":
        from saebook.notebook import setup

        return setup
    raise AttributeError(f"module 'saebook' has no attribute {name!r}")
