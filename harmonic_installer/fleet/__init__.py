"""Operator side: deploy and watch many machines through MAAS's REST API 2.0 (`harmonic-install fleet ...`).

Never imported by the install path (lint: TID251 bans it outside cli.py and this package). Modules:

    transport.py  the stdlib HTTP client (the only HTTP user here)
    client.py     the API key, OAuth 1.0 PLAINTEXT signing, MAAS's endpoints and their errors
    profile.py    where the key comes from: the MAAS CLI's saved profile, or --maas-url + env/file
    selection.py  machines by system_id, hostname, tag, pool or zone; can each be deployed?
    events.py     MAAS events -> what our installer said (step, download %, installed, the FAIL cause)
    watch.py      the per-machine state machine and the polling loop
    deploy.py     validate everything, then a canary, then at most N at a time
    render.py     live table on a TTY, a line per change otherwise, the summary and the JSON report
    errors.py     FleetError and the exit codes
"""
