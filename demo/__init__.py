"""`nox -s demo` and its throwaway parts: the run (demo.run), sample tests (examples/), a stand-in
SGLang checkout (checkout/) and loopback registries and images (demo.sandbox, also the tests').
Outside the `ci` package: nothing in ci/ imports it."""
