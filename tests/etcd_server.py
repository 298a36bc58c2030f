from ccm.testing.etcd import *  # noqa: F403 - moved: import ccm.testing.etcd
