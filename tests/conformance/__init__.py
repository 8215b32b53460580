"""Conformance suites for the declared seams (docs/seams.md): each is a class of tests that
every implementation of its seam must pass; a ``tests/test_*_conformance.py`` file runs it
against every registered implementation (automerge-repo's ``runStorageAdapterTests`` model)."""
