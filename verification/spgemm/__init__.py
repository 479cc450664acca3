"""cocotb verification of the SpGEMM engine (rtl/spgemm.py) against the SimPy model."""
