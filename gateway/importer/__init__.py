"""Importing keys, users and permissions from other servers (`gateway import btcpay`).

::

    source.py    what was read: users, stores, store roles, keys (pure values)
    export.py    BTCPay data from a JSON export (pure)
    btcpay_db.py BTCPay data from its PostgreSQL database (read-only)
    plan.py      what to write, what to skip and why (pure)
    apply.py     writing a plan through the store, audited
    summary.py   the plan as text or JSON
    command.py   the CLI command
"""
