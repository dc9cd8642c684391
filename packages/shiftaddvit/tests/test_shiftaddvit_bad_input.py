import pytest


def test_every_public_function_rejects_bad_input():
    pytest.fail("write a bad-input test for every public function")
