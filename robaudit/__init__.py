"""robaudit: robustness audits of image classifiers, with a report and a CI gate."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("robaudit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
