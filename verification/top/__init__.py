"""System-level verification of ``accel_top``: random programs, values and cycles.

``test_top.py`` is the pytest launcher (builds once per configuration, runs plans);
``top_tests.py`` holds the ``@cocotb.test()`` coroutine that runs inside the simulator.
"""
