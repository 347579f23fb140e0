"""The installed version of filterscope (a leaf: every module may import it, it imports none of them)."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("filterscope")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
