"""Physical and instrument constants, defined once (the kernels import them from here)."""

C_M_S = 299792458.0
"""Speed of light in vacuum (m/s)."""

JD_TO_MJD = 2400000.5
"""MJD = JD - JD_TO_MJD (days)."""

DAY_S = 86400.0
"""Seconds per day (UTC day, for JD <-> seconds)."""

INTEGRATION_S = 12.884902000427246
"""DSA-110 correlator integration time (s); also ``band.integration_s``'s default."""

CADENCE_S = 24 * INTEGRATION_S
"""One observation: 24 integrations, 309.24 s start to start."""
