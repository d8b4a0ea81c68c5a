"""A fleet of hubs sharing one PostgreSQL database (``[fleet]``). (fleetlink placeholder:
fleetdb's __init__ replaces this at the merge.)"""
