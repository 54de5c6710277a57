"""Demo: slower than its estimate, but within its timeout."""

import time
import unittest

from ci_register import register_amd_ci

register_amd_ci(3, "stage-demo-test-1-gpu-amd")


class TestSlow(unittest.TestCase):
    def test_long_prefill(self):
        time.sleep(4)


if __name__ == "__main__":
    unittest.main()
