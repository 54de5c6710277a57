"""Demo: disabled in its registration, so listed with its reason and never run."""

import unittest

from ci_register import register_amd_ci

register_amd_ci(est_time=30, suite="stage-demo-test-1-gpu-amd", disabled="waits for a ROCm 7.2 fix")


class TestDisabled(unittest.TestCase):
    def test_never(self):
        self.fail("a disabled file ran")
