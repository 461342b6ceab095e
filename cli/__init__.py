"""``mdops``: the command line of the Ops Console REST API, for operators and pipelines.

It speaks HTTP only (nothing from ``api/`` or ``controller/`` is imported): ``main`` is the console
script, ``commands`` has the commands, ``client`` the API calls, ``config`` the connection and its
contexts, ``follow`` the live logs, ``render`` what people see, ``errors`` the exit codes.
"""
