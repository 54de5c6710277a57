"""Demo: a quick unittest-style file that passes and records a performance check."""

import unittest

from ci_register import register_amd_ci

from ci.thresholds import check

register_amd_ci(est_time=5, suite="stage-demo-test-1-gpu-amd")


class TestFast(unittest.TestCase):
    def test_throughput(self):
        check("test_demo_throughput", "output_throughput", 1234.0)

    def test_latency(self):
        check("test_demo_throughput", "avg_latency_ms", 41.0)


if __name__ == "__main__":
    unittest.main()
