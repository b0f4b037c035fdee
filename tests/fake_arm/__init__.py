"""A local fake of Azure Resource Manager (the Microsoft.Compute subset), served over TLS."""

from tests.fake_arm.server import API_VERSION, FakeArm
from tests.fake_arm.tls import TlsFiles, make_tls
from tests.fake_arm.world import World

__all__ = ["API_VERSION", "FakeArm", "TlsFiles", "World", "make_tls"]
