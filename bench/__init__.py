"""Benchmark of the running gateway (issue 8): `python -m bench [--quick] [--runs N] [--backend ...]`.

The gateway is started as an operator starts it (`python run.py --config FILE`, its own process and
data dir), driven over real SMTP from a separate load process, and compared with baselines measured
in the same run: a bare aiosmtpd server for ingress, a python-gnupg process pool for verification and
replies. Targets belong here, not in the unit tests.
"""
