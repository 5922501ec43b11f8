"""InstantRestore runtime: the network, its backends, tracking, compositing and the frame pipeline."""

from .bundle import Bundle, BundleError, load_bundle
from .profile import Profile, ProfileError
from .restorer import Restorer, load_restorer

__all__ = ["Bundle", "BundleError", "Profile", "ProfileError", "Restorer", "load_bundle", "load_restorer"]
