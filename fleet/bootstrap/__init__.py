"""Putting the agent on a fresh board over SSH: `edgeship fleet wheelhouse` and `edgeship fleet bootstrap`.

    probe.py       what the board is: Python, architecture, glibc, free disk, systemd
    wheelhouse.py  wheels of `edgeship[agent]` for each board platform, built here (boards are often offline)
    provision.py   the agent.yaml a board gets (one function writes the config dict)
    unit.py        the systemd unit for `agent serve`
    board.py       one board's steps over SSH: push wheels, install a virtualenv, self-test, switch, provision
"""
