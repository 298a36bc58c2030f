from ccm.testing.noderoot import *  # noqa: F403 - moved: import ccm.testing.noderoot
