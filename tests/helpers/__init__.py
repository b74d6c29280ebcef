"""Code the tests share: generated data, batch stores, registry and server helpers, workers
that tests start as separate processes. One place, so a test never imports another test."""
