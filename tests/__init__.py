"""The test suite; a package so helpers import the same way from pytest and .ci/run."""
