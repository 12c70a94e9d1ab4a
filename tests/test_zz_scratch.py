import pytest
@pytest.mark.kafka
def test_a(kafka):
    kafka.stop()
    raise AssertionError("boom")
@pytest.mark.kafka
def test_b(kafka):
    assert kafka.running
