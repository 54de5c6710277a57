"""Demo: the files test the checkout, not the image's copy. The nightly image ships an older
sglang; the stage installed the workspace's python/ over it, and this file sees that one."""

import re
import unittest
from importlib import metadata
from pathlib import Path

import sglang
from ci_register import register_amd_ci

register_amd_ci(est_time=2, suite="stage-demo-test-1-gpu-amd")

CHECKOUT = Path(__file__).resolve().parents[2]  # test/registered/<this file>


class TestCheckout(unittest.TestCase):
    def test_sglang_is_the_checkouts(self):
        version_file = (CHECKOUT / "python" / "sglang" / "version.py").read_text()
        found = re.search(r'__version__ = "([^"]+)"', version_file)
        if found is None:
            self.fail("no __version__ line in the checkout's python/sglang/version.py")
        expected = found.group(1)
        print(f"sglang {sglang.__version__} imported from {sglang.__file__} (checkout's version: {expected})")
        self.assertTrue(Path(sglang.__file__).resolve().is_relative_to(CHECKOUT / "python"), sglang.__file__)
        self.assertEqual(sglang.__version__, expected)
        self.assertEqual(metadata.version("sglang"), expected)  # pip's record says so too


if __name__ == "__main__":
    unittest.main()
