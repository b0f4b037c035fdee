"""The parts of the property-test kit; its public surface is `fsm.testing`."""
