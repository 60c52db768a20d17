"""The audit log of searches, event reads and registry changes (``log``), the servicer hook
that writes it (``rpc``) and the ``smartgate audit`` / ``smartgate keys`` commands
(``commands``)."""
